#!/usr/bin/env python3
"""The toucan-worker CNN in plain PyTorch, for bench/worker-vs-torch.

Does the same work as `toucan-worker train --model cnn` and `toucan-worker predict --benchmark`,
on the same toucan dataset, read straight from its record shards with numpy:

  train    the same network (conv3x3 pad 1 32, ReLU, maxpool 2, conv3x3 pad 1 64, ReLU, maxpool 2,
           flatten, linear 128, ReLU, dropout 0.25, linear classes), Adam (default betas and
           eps, no weight decay), cross-entropy. Each split is kept in memory as the worker
           keeps it (u8 NHWC); each epoch draws a permutation, and every batch is gathered with
           index_select, permuted to NCHW, scaled to [0, 1] and normalized with the train
           split's per-channel mean/std from card.json, as the worker's loader does (so the
           batches have the same memory layout, channels-last, and run the same kernels). The
           worker does that step on a background thread; here it is in the loop. Per batch the
           loss and the count of correct predictions are read back, as the worker does.
           `images_per_sec` is the train split's size over the wall time of the epoch's
           training loop (the worker's definition: validation excluded). Validation after every
           epoch and a test evaluation at the end, untimed. One JSON line per epoch and a final
           line, like the worker.
           Under torchrun (WORLD_SIZE > 1, for bench/training-vs-ddp): DistributedDataParallel
           on Gloo; each rank trains on every WORLD_SIZE-th record of the epoch's order in
           batches of batch-size / WORLD_SIZE (the global batch stays batch-size), as
           toucan-worker's replicas do; rank 0 prints, its images/s counting every rank's
           images, and its loss and accuracy its own share's.
  predict  forward passes of one image and of one batch of B images (the split's first ones,
           preprocessed beforehand; no_grad, eval mode), each followed by the class
           probabilities in f64 and a read of their sum, as the worker's benchmark does, after
           10 warm-up passes of each; prints the worker's `--benchmark` JSON as its last line.
           --weights loads the worker's model.safetensors so that both time the same model.
  check    evaluates the worker's model.safetensors on a split with this script's data path:
           the loss the worker reported, to the last digits, shows that the data, the
           preprocessing and the network are the same.

  python bench/torch_cnn.py train --data DIR --epochs 1 --batch-size 128 --threads 2
  python bench/torch_cnn.py predict --data DIR --benchmark 1000 --batch-size 128 --threads 2 \
      --weights TRAIN_OUT/model.safetensors

Diagnostics (train): --breakdown adds where each epoch's time went (gathering and
preprocessing, forward and loss, backward, optimizer step, host reads); --prenormalized
preprocesses each split once and gathers batches from the float tensor, which gives
contiguous NCHW batches (the first worker's data path).
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SHARD_MAGIC = b"TCNSHRD1"
SHARD_HEADER_LEN = 32
FORMAT = "toucan.dataset/v1"
DROPOUT = 0.25


# === the dataset ===


def read_split(dataset: Path, index: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (u16) and HWC pixels (u8, one row per record) of a split, every shard checked."""
    split = next((s for s in index["splits"] if s["name"] == name), None)
    if split is None:
        sys.exit(f"torch_cnn: {dataset}: no split named {name!r}")
    shape = index["image"]
    per_record = shape["height"] * shape["width"] * shape["channels"]
    labels, pixels = [], []
    for entry in split["shards"]:
        path = dataset / entry["path"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            sys.exit(f"torch_cnn: {path}: SHA-256 differs from the index")
        if data[:8] != SHARD_MAGIC:
            sys.exit(f"torch_cnn: {path}: not a toucan record shard")
        n, h, w, c = struct.unpack_from("<4I", data, 8)
        if (h, w, c) != (shape["height"], shape["width"], shape["channels"]):
            sys.exit(f"torch_cnn: {path}: image shape differs from the index")
        if len(data) != SHARD_HEADER_LEN + 2 * n + n * per_record:
            sys.exit(f"torch_cnn: {path}: truncated")
        label_end = SHARD_HEADER_LEN + 2 * n
        labels.append(np.frombuffer(data, dtype="<u2", count=n, offset=SHARD_HEADER_LEN))
        pixels.append(np.frombuffer(data, dtype=np.uint8, offset=label_end).reshape(n, per_record))
    return np.concatenate(labels), np.concatenate(pixels)


def normalization(card: dict) -> tuple[list[float], list[float]]:
    """The train split's per-channel mean and std; a constant channel is left unscaled."""
    train = next(s for s in card["splits"] if s["name"] == "train")
    mean = [c["mean"] for c in train["channels"]]
    std = [c["std"] if c["std"] > 1e-8 else 1.0 for c in train["channels"]]
    return mean, std


class Split:
    """One split in memory as the worker keeps it: u8 pixels, NHWC, and i64 labels."""

    def __init__(self, dataset: Path, index: dict, name: str):
        labels, pixels = read_split(dataset, index, name)
        shape = index["image"]
        self.pixels = torch.from_numpy(pixels.copy()).view(
            len(labels), shape["height"], shape["width"], shape["channels"]
        )
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)


class Preprocess:
    """u8 NHWC pixels to model inputs, as the worker's loader does it: permute to NCHW (a view,
    so the result keeps NHWC strides: channels-last memory), to f32, / 255, then
    `(x - mean) / std` with the train split's per-channel statistics."""

    def __init__(self, card: dict):
        mean, std = normalization(card)
        stats = lambda v: torch.tensor(v, dtype=torch.float64).to(torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = stats(mean), stats(std)

    def __call__(self, pixels_nhwc: torch.Tensor) -> torch.Tensor:
        images = pixels_nhwc.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return ((images - self.mean) / self.std).contiguous()


def open_dataset(dataset: Path) -> tuple[dict, dict]:
    index = json.loads((dataset / "index.json").read_text())
    if index.get("format") != FORMAT:
        sys.exit(f"torch_cnn: {dataset}: not a {FORMAT} dataset")
    card = json.loads((dataset / "card.json").read_text())
    return index, card


# === the model ===


class Cnn(nn.Module):
    """The worker's `cnn`. Attribute names match its variable names (conv1, conv2, fc1, fc2), so
    its model.safetensors loads as a state dict."""

    def __init__(self, channels: int, height: int, width: int, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (height // 2 // 2) * (width // 2 // 2), 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        x = F.dropout(F.relu(self.fc1(x)), DROPOUT, self.training)
        return self.fc2(x)


def build_model(index: dict) -> Cnn:
    shape = index["image"]
    return Cnn(shape["channels"], shape["height"], shape["width"], len(index["classes"]))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of f32 tensors (what tch's VarStore::save writes), without the
    safetensors package: u64 header length, JSON header, then the raw little-endian data."""
    data = path.read_bytes()
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + header_len])
    body = 8 + header_len
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            sys.exit(f"torch_cnn: {path}: {name} is {meta['dtype']}, expected F32")
        start, end = meta["data_offsets"]
        array = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=body + start)
        tensors[name] = torch.from_numpy(array.reshape(meta["shape"]).copy())
    return tensors


# === train ===


def set_threads(args) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.interop_threads is not None:
        torch.set_num_interop_threads(args.interop_threads)


def correct_count(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).to(torch.float32).sum().item()


def train_epoch(model, opt, split, preprocess, order, batch_size, breakdown):
    """One pass over the records in `order` (the whole split, or this rank's share), each
    batch gathered with index_select and preprocessed; mean loss and accuracy."""
    model.train()
    n = len(order)
    loss_sum = correct = 0.0
    clock = time.perf_counter
    for start in range(0, n, batch_size):
        t0 = clock()
        idx = order.narrow(0, start, min(batch_size, n - start))
        x = preprocess(split.pixels.index_select(0, idx))
        y = split.labels.index_select(0, idx)
        t1 = clock()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        t2 = clock()
        opt.zero_grad()
        loss.backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        loss_sum += loss.item() * len(idx)
        correct += correct_count(logits, y)
        t5 = clock()
        if breakdown is not None:
            for key, seconds in zip(breakdown, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                breakdown[key] += seconds
    return loss_sum / n, correct / n


class Prenormalized:
    """--prenormalized: the whole split preprocessed once into one f32 tensor (what the first
    version of the worker did). Gathering from it with index_select yields contiguous NCHW
    batches, so the network runs on the NCHW kernels instead of the channels-last ones."""

    def __init__(self, split: Split, preprocess: Preprocess):
        self.pixels = preprocess(split.pixels)
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def evaluate(model, split, preprocess, batch_size):
    """Mean loss and accuracy in eval mode, in order, in batches of 4 x batch size."""
    model.eval()
    n = len(split)
    if n == 0:
        return math.nan, math.nan
    loss_sum = correct = 0.0
    batch = max(batch_size * 4, 1)
    for start in range(0, n, batch):
        size = min(batch, n - start)
        x = preprocess(split.pixels.narrow(0, start, size))
        y = split.labels.narrow(0, start, size)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y).item() * size
        correct += correct_count(logits, y)
    return loss_sum / n, correct / n


def train(args) -> None:
    set_threads(args)
    index, card = open_dataset(args.data)
    preprocess = Preprocess(card)
    train_split, valid, test = (Split(args.data, index, s) for s in ("train", "valid", "test"))
    batch_inputs = preprocess
    if args.prenormalized:
        train_split, batch_inputs = Prenormalized(train_split, preprocess), lambda x: x

    # Under torchrun (WORLD_SIZE > 1): DistributedDataParallel on Gloo, each rank training on
    # every WORLD_SIZE-th record of the epoch's order in batches of batch-size / WORLD_SIZE,
    # as toucan-worker's replicas shard the data; every rank validates, as the worker's do.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(args.seed)
    model = build_model(index)
    batch_size = args.batch_size
    if world > 1:
        if args.batch_size % world:
            sys.exit(f"torch_cnn: --batch-size {args.batch_size} does not split over {world} ranks")
        torch.distributed.init_process_group("gloo")
        model = torch.nn.parallel.DistributedDataParallel(model)
        batch_size //= world
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n = len(train_split)
    train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        breakdown = (
            dict.fromkeys(["gather", "forward_loss", "backward", "optimizer", "host_reads"], 0.0)
            if args.breakdown
            else None
        )
        # The worker draws its order before it starts the epoch's clock.
        order = torch.randperm(n)[rank::world]
        epoch_started = time.perf_counter()
        loss, accuracy = train_epoch(
            model, opt, train_split, batch_inputs, order, batch_size, breakdown
        )
        epoch_seconds = time.perf_counter() - epoch_started
        train_seconds += epoch_seconds
        val_loss, val_accuracy = evaluate(model, valid, preprocess, args.batch_size)
        line = {
            "epoch": epoch,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": args.lr,
            "images_per_sec": n / epoch_seconds,
            "seconds": epoch_seconds,
        }
        if breakdown is not None:
            line["breakdown_seconds"] = breakdown
        if rank == 0:
            print(json.dumps(line), flush=True)
    test_loss, test_accuracy = evaluate(model, test, preprocess, args.batch_size)
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    print(
        json.dumps(
            {
                "model": "cnn",
                "epochs": args.epochs,
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
                "train_seconds": train_seconds,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )


# === predict ===


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 (the value at rank round((n - 1) q), as the worker computes them) and the
    mean, in milliseconds."""
    ordered = sorted(ms)
    at = lambda q: ordered[math.floor((len(ordered) - 1) * q + 0.5)]
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "mean": sum(ordered) / len(ordered)}


def probabilities(model, x: torch.Tensor) -> float:
    """What the worker times per pass: the forward pass, class probabilities in f64, and a
    host read of their sum (a no-op wait on the CPU)."""
    return model(x).to(torch.float64).softmax(-1).sum().item()


def time_passes(model, x: torch.Tensor, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        probabilities(model, x)
    clock = time.perf_counter_ns
    times = []
    for _ in range(iterations):
        t0 = clock()
        probabilities(model, x)
        times.append((clock() - t0) / 1e6)
    return times


def predict(args) -> None:
    if args.benchmark < 1 or args.batch_size < 1:
        sys.exit("torch_cnn: --benchmark and --batch-size must be at least 1")
    set_threads(args)
    index, card = open_dataset(args.data)
    # As the worker: the whole split preprocessed at once, before any timing.
    images = Preprocess(card)(Split(args.data, index, args.split).pixels)
    n = len(images)
    if n == 0:
        sys.exit(f"torch_cnn: the {args.split} split is empty")
    model = build_model(index)
    if args.weights is not None:
        model.load_state_dict(read_safetensors(args.weights))
    model.eval()
    # As the worker: the split's first image, and its first batch.
    single = images.narrow(0, 0, 1)
    batch = images.narrow(0, 0, min(args.batch_size, n))
    with torch.no_grad():
        single_ms = time_passes(model, single, args.benchmark, args.warmup)
        batch_ms = time_passes(model, batch, args.benchmark, args.warmup)
    print(
        json.dumps(
            {
                "benchmark": {
                    "iterations": args.benchmark,
                    "batch_size": len(batch),
                    "single_ms": percentiles(single_ms),
                    "batch_ms": percentiles(batch_ms),
                }
            }
        ),
        flush=True,
    )


def check(args) -> None:
    """Evaluates the worker's trained weights on a split here: the same loss and accuracy as
    the worker reports show that both read the same data, preprocess it the same way and run
    the same network."""
    set_threads(args)
    index, card = open_dataset(args.data)
    split = Split(args.data, index, args.split)
    model = build_model(index)
    model.load_state_dict(read_safetensors(args.weights))
    loss, accuracy = evaluate(model, split, Preprocess(card), args.batch_size)
    print(json.dumps({"split": args.split, "loss": loss, "accuracy": accuracy}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, required=True, help="a toucan dataset directory")
    common.add_argument("--batch-size", type=int, default=128)
    common.add_argument("--threads", type=int, help="torch.set_num_threads (intra-op)")
    common.add_argument(
        "--interop-threads",
        type=int,
        help="torch.set_num_interop_threads (default: left alone, as the worker does)",
    )
    t = sub.add_parser("train", parents=[common], help="train the CNN, one JSON line per epoch")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--breakdown", action="store_true", help="time the phases of each batch")
    t.add_argument(
        "--prenormalized",
        action="store_true",
        help="gather batches from the split preprocessed once (NCHW batches; a diagnostic)",
    )
    p = sub.add_parser("predict", parents=[common], help="forward-pass latency, as JSON")
    p.add_argument("--split", default="test")
    p.add_argument("--benchmark", type=int, default=1000, help="timed iterations")
    p.add_argument("--warmup", type=int, default=10, help="untimed passes before, of each")
    p.add_argument("--weights", type=Path, help="the worker's model.safetensors")
    c = sub.add_parser(
        "check", parents=[common], help="evaluate the worker's weights here (same data and model?)"
    )
    c.add_argument("--split", default="test")
    c.add_argument("--weights", type=Path, required=True, help="the worker's model.safetensors")
    args = parser.parse_args()
    if args.command == "check":
        check(args)
    elif args.command == "train":
        if args.epochs < 1 or args.batch_size < 1:
            sys.exit("torch_cnn: --epochs and --batch-size must be at least 1")
        train(args)
    else:
        predict(args)


if __name__ == "__main__":
    main()
