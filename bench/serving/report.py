#!/usr/bin/env python3
"""Writes bench/results/serving.md from what bench/serving/run left in its work directory:
one table per connection count (requests/s, p50 and p99 latency, peak RSS of each server), the
toucan/KServe ratios against the issue's targets, and the model's own forward time.

Reads, under --work: runs/SIDE-CONNECTIONS-ROUND.wrk (wrk's output, the last line the JSON of
predict.lua), runs/SIDE-CONNECTIONS-ROUND.proc (`COMM PEAK_KIB PROCESSES CPU_MS` per process
started for the side), agree.json (images.py agree), forward-worker.out and forward-torch.out
(the `--benchmark` JSON of one image), train.jsonl (the training run's lines).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

# Targets from the issue, toucan's server against KServe's.
TARGET_RPS = 5.0
TARGET_P99 = 1 / 3
TARGET_RSS = 1 / 5

SIDES = {
    "kserve": "KServe ModelServer",
    "toucan": "toucan server",
    "router": "toucan via router",
    "window": "toucan server, 5 ms window",
}


def last_json(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def round_of(work: Path, side: str, connections: int, r: int) -> dict:
    wrk = last_json(work / "runs" / f"{side}-{connections}-{r}.wrk")
    ok = wrk["responses"] - wrk["errors"]["status"]
    processes = []
    for line in (work / "runs" / f"{side}-{connections}-{r}.proc").read_text().splitlines():
        comm, kib, count, cpu_ms = line.split()
        processes.append(
            {"comm": comm, "kib": int(kib), "count": int(count), "cpu_ms": int(cpu_ms)}
        )
    return {
        "rps": ok / wrk["seconds"],
        "p50": wrk["latency_us"]["p50"] / 1000,
        "p99": wrk["latency_us"]["p99"] / 1000,
        "errors": sum(wrk["errors"].values()),
        "cpu_per_request": sum(p["cpu_ms"] for p in processes) / max(wrk["responses"], 1),
        "processes": processes,
    }


def run_of(work: Path, side: str, connections: int, rounds: int) -> dict:
    """One cell: the median of the rounds; the peak RSS is the highest of them."""
    each = [round_of(work, side, connections, r) for r in range(1, rounds + 1)]
    median = lambda key: statistics.median(e[key] for e in each)
    peaks = [[p["kib"] / 1024 for p in e["processes"]] for e in each]
    return {
        "rps": median("rps"),
        "rps_range": (min(e["rps"] for e in each), max(e["rps"] for e in each)),
        "p50": median("p50"),
        "p99": median("p99"),
        "cpu_per_request": median("cpu_per_request"),
        "errors": sum(e["errors"] for e in each),
        "rss_mib": max(sum(p) for p in peaks),
        "rss_parts": [max(p[i] for p in peaks) for i in range(len(peaks[0]))],
    }


def version_of(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (done.stdout or done.stderr).strip().splitlines()[0]
    return first.split(" Copyright")[0]


def machine() -> str:
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return f"{cpu}, {os.cpu_count()} CPUs, {mem_kib / 1024 / 1024:.0f} GiB"


def on(cpus: str) -> str:
    """Where a process ran, in words: a `taskset -c` list, or none."""
    if not cpus:
        return "on any CPU"
    return f"on CPU {cpus}" if cpus.isdigit() else f"on CPUs {cpus}"


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    met = ratio >= target if higher_is_better else ratio <= target
    return "met" if met else "**not met**"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--router", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--built", required=True)
    p.add_argument("--load", nargs=2, required=True)
    p.add_argument("--connections", required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--server-cpus", required=True)
    p.add_argument("--client-cpus", required=True)
    p.add_argument("--delay", type=int, required=True)
    p.add_argument("--default-delay", type=int, required=True)
    p.add_argument("--peak-resets", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--command", required=True)
    a = p.parse_args()

    work = a.work
    conns = [int(c) for c in a.connections.split(",")]
    runs = {(s, c): run_of(work, s, c, a.rounds) for s in SIDES for c in conns}
    agree = json.loads((work / "agree.json").read_text())
    forward = {
        side: last_json(work / f"forward-{side}.out")["benchmark"]["single_ms"]
        for side in ("worker", "torch")
    }
    trained = [json.loads(l) for l in (work / "train.jsonl").read_text().splitlines() if l]
    final = trained[-1]
    accuracy = final.get("test_accuracy", final.get("accuracy"))
    pkg = importlib.metadata.version
    import torch

    labels = dict(SIDES)
    labels["kserve"] = f"KServe {pkg('kserve')} ModelServer"
    labels["toucan"] = f"toucan server (window {a.delay} ms)"
    labels["window"] = f"toucan server, {a.default_delay} ms window"

    o = []
    o.append("## toucan's model server vs KServe's Python ModelServer: the CNN over REST, CPU")
    o.append("")
    o.append(f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} on {machine()}, "
             f"load average {a.load[0]} before and {a.load[1]} after (the benchmark's own "
             f"server and wrk count for up to 2; more is other work on the machine), in "
             f"{a.seconds} s, with")
    o.append("")
    o.append(f"    {a.command}")
    o.append("")
    o.append(f"- toucan: `{version_of(a.worker)}` and `{version_of(a.router)}`, {a.revision}; "
             f"release build of {a.built}; libtorch from the PyTorch below.")
    o.append(f"- KServe {pkg('kserve')} (`bench/serving/kserve_cnn.py`: a `kserve.Model`, one "
             f"uvicorn worker, no gRPC server, no per-request log lines), PyTorch "
             f"{torch.__version__}, uvicorn {pkg('uvicorn')}, FastAPI {pkg('fastapi')}, Pillow "
             f"{pkg('pillow')}, Python {platform.python_version()}.")
    o.append(f"- Load: {wrk_version()}; `bench/serving/predict.lua` POSTs one 28x28 PNG (base64) "
             f"in a TF Serving v1 `:predict` body, one instance per request; one wrk thread "
             f"{on(a.client_cpus)}; per cell and round {a.warmup} s of warm-up, then "
             f"{a.duration} s timed; {a.rounds} round{'s' if a.rounds > 1 else ''}, the "
             f"servers' order rotating; the tables give the median of the rounds (the highest "
             f"peak RSS). CPU ms per request: the user and "
             f"system time of the server's processes during the timed run over its responses "
             f"(the router's row adds the router's and its server's)"
             + ("; it includes the time libtorch's OpenMP threads spin waiting for the next "
                "forward pass (both sides link the same libtorch and libgomp), so it is what a "
                "request takes from the machine, more than the work it needs."
                if a.threads > 1 else "."))
    o.append(f"- Every server: the same exported model, {a.threads} libtorch intra-op "
             f"thread{'s' if a.threads > 1 else ''}, {on(a.server_cpus)} (the router too). "
             f"toucan's servers batch what is queued (at most 32 per forward pass); the "
             f"window is how long the first request of a batch waits for more: {a.delay} ms "
             f"for the main rows, {a.default_delay} ms (the Endpoint's default) for the last. "
             f"The router forwards to a toucan server of its own (window {a.delay} ms); its "
             f"memory is the router's plus that server's.")
    n = agree["images"]
    right = ", ".join(f"{k} {v}/{n}" for k, v in agree["correct"].items())
    epochs = sum("images_per_sec" in r for r in trained)
    o.append(f"- Model: `toucan-worker train --model cnn`, {epochs} epoch(s), test "
             f"accuracy {accuracy:.4f}. Checked before timing: the test split's first {n} "
             f"images, one per request, get the same class from every server (right: "
             f"{right}); the largest difference of a probability from KServe's is "
             f"{agree['max_probability_difference']:.1e}.")
    peak_words = ("reset before each timed run (`clear_refs`), so it is that run's peak"
                  if a.peak_resets else
                  "could not be reset between runs, so it is the peak since the server started")
    o.append(f"- Peak RSS: VmHWM of each server's processes (summed over a process and its "
             f"children), {peak_words}.")
    o.append("")

    for c in conns:
        k = runs[("kserve", c)]
        o.append(f"### {c} connection{'s' if c > 1 else ''}")
        o.append("")
        o.append("| server | requests/s (lowest-highest round) | p50 ms | p99 ms | "
                 "CPU ms per request | peak RSS MiB | errors |")
        o.append("|---|---:|---:|---:|---:|---:|---:|")
        for side in SIDES:
            r = runs[(side, c)]
            low, high = r["rps_range"]
            rss = f"{r['rss_mib']:.0f}"
            if side == "router":
                rss += " (" + " + ".join(f"{part:.0f}" for part in r["rss_parts"]) + ")"
            o.append(f"| {labels[side]} | {r['rps']:,.0f} ({low:,.0f}-{high:,.0f}) | "
                     f"{r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_per_request']:.2f} | {rss} | "
                     f"{r['errors']} |")
        for side in ("toucan", "router"):
            r = runs[(side, c)]
            o.append(f"| **{SIDES[side]} / KServe** | **{r['rps'] / k['rps']:.2f}x** | "
                     f"{r['p50'] / k['p50']:.2f}x | **{r['p99'] / k['p99']:.2f}x** | "
                     f"{r['cpu_per_request'] / k['cpu_per_request']:.2f}x | "
                     f"**{r['rss_mib'] / k['rss_mib']:.2f}x** | |")
        o.append("")

    o.append("### Against the targets")
    o.append("")
    o.append(f"Targets, toucan against KServe: at least {TARGET_RPS:.0f}x the requests/s, at "
             f"most 1/3 of the p99 latency ({TARGET_P99:.2f}x), at most 1/5 of the memory "
             f"({TARGET_RSS:.2f}x).")
    o.append("")
    o.append("| connections | server | requests/s | p99 | memory |")
    o.append("|---:|---|---|---|---|")
    for c in conns:
        k = runs[("kserve", c)]
        for side in ("toucan", "router"):
            r = runs[(side, c)]
            rps, p99, rss = r["rps"] / k["rps"], r["p99"] / k["p99"], r["rss_mib"] / k["rss_mib"]
            o.append(f"| {c} | {SIDES[side]} | {rps:.2f}x {verdict(rps, TARGET_RPS, True)} | "
                     f"{p99:.2f}x {verdict(p99, TARGET_P99, False)} | "
                     f"{rss:.2f}x {verdict(rss, TARGET_RSS, False)} |")
    o.append("")

    o.append("### The model's own forward pass")
    o.append("")
    w, t = forward["worker"], forward["torch"]
    o.append(f"One image, 1,000 timed passes after 10 warm-up passes (forward, softmax in f64, a "
             f"read of the sum), {a.threads} threads: `toucan-worker predict --benchmark` p50 "
             f"{w['p50']:.3f} ms, p99 {w['p99']:.3f} ms; `bench/torch_cnn.py predict` (the "
             f"PyTorch network KServe serves) p50 {t['p50']:.3f} ms, p99 {t['p99']:.3f} ms.")
    o.append("")
    if 1 in conns:
        one = runs[("toucan", 1)]["p50"]
        kone = runs[("kserve", 1)]["p50"]
        o.append(f"At 1 connection the toucan server's p50 is {one:.3f} ms: "
                 f"{one / w['p50']:.1f}x the forward pass, {one - w['p50']:.3f} ms for HTTP, "
                 f"JSON, base64, PNG decoding and the batcher's hand-off (wrk's own time "
                 f"included). KServe's is {kone:.3f} ms: {kone / t['p50']:.1f}x its forward "
                 f"pass, {kone - t['p50']:.3f} ms around it.")
        o.append("")
    a.out.write_text("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
