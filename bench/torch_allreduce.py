#!/usr/bin/env python3
"""All-reduce throughput of torch.distributed on Gloo, for bench/training-vs-ddp: the
collective PyTorch's DistributedDataParallel uses on the CPU, timed as the worker's
`allreduce` example times its own (median of ITERATIONS after 3 warm-up operations, float32
buffers of MIB mebibytes). Run under torchrun; rank 0 prints one JSON line per size.

  torchrun --nproc-per-node 2 bench/torch_allreduce.py 1,4,16,64 20
"""

import json
import statistics
import sys
import time

import torch
import torch.distributed as dist

WARMUP = 3


def main() -> None:
    sizes = [int(s) for s in sys.argv[1].split(",")]
    iterations = max(int(sys.argv[2]), 1)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    for mib in sizes:
        tensor = torch.ones((mib << 20) // 4, dtype=torch.float32)
        times = []
        for i in range(WARMUP + iterations):
            started = time.perf_counter()
            dist.all_reduce(tensor)
            if i >= WARMUP:
                times.append(time.perf_counter() - started)
        if dist.get_rank() == 0:
            print(json.dumps({"mode": "torch", "mib": mib, "seconds": statistics.median(times)}),
                  flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
