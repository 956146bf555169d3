"""Writes bench/results/operator.md from bench/operator-vs-argo/run's work folder.

Each side's rounds are in WORK/ROUND-SIDE/ (result.json from bench-driver, or `error` with the
reason that side has no figures). A figure is the median over the rounds that produced it.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

SIDES = ("toucan", "argo")
LABEL = {"toucan": "toucan", "argo": "Argo"}

# (label, getter, format, higher_is_better)
FIGURES = [
    ("runs completed per minute", lambda r: r["runsPerMinute"], "{:.1f}", True),
    ("makespan: first create to last run finished (s)", lambda r: r["makespanSeconds"], "{:.1f}", False),
    ("run duration p50 (s)", lambda r: r["runSeconds"]["p50"], "{:.1f}", False),
    ("run duration p99 (s)", lambda r: r["runSeconds"]["p99"], "{:.1f}", False),
    ("step done → dependent pod created, p50 (ms, watch)", lambda r: r["edgeWatchMs"]["p50"], "{:.0f}", False),
    ("step done → dependent pod created, p99 (ms, watch)", lambda r: r["edgeWatchMs"]["p99"], "{:.0f}", False),
    ("step done → dependent pod created, p50 (s, API timestamps)", lambda r: r["edgeApiSeconds"]["p50"], "{:.0f}", False),
    ("step done → dependent pod created, p99 (s, API timestamps)", lambda r: r["edgeApiSeconds"]["p99"], "{:.0f}", False),
    ("run created → first pod, p50 (ms)", lambda r: r["firstPodMs"]["p50"], "{:.0f}", False),
    ("run created → first pod, p99 (ms)", lambda r: r["firstPodMs"]["p99"], "{:.0f}", False),
    ("last step done → run finished, p50 (ms)", lambda r: r["finishMs"]["p50"], "{:.0f}", False),
    ("last step done → run finished, p99 (ms)", lambda r: r["finishMs"]["p99"], "{:.0f}", False),
    ("controller peak memory, VmHWM (MiB)", lambda r: r.get("vmHWMMiB") or None, "{:.0f}", False),
    ("controller CPU time during the runs (s)", lambda r: r.get("cpuSeconds") or None, "{:.1f}", False),
]


def load(work, rounds, side):
    results, errors = [], []
    for r in range(1, rounds + 1):
        d = os.path.join(work, f"{r}-{side}")
        res = os.path.join(d, "result.json")
        err = os.path.join(d, "error")
        if os.path.exists(err):
            errors.append(open(err).read().strip())
        elif os.path.exists(res):
            results.append(json.load(open(res)))
        else:
            errors.append("not run")
    return results, errors


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--argo-version", required=True)
    ap.add_argument("--toucan-version", required=True)
    ap.add_argument("--qps", required=True)
    ap.add_argument("--burst", required=True)
    ap.add_argument("--workers", required=True)
    ap.add_argument("--argo-requeue", required=True)
    ap.add_argument("--total-seconds", type=int, default=0)
    a = ap.parse_args()

    data = {s: load(a.work, a.rounds, s) for s in SIDES}
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    )
    out = []
    w = out.append
    w(f"## {a.runs} runs")
    w("")
    w(f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} with `{a.command}` on {cpu}, "
      f"{os.cpu_count()} CPUs; {a.runs} runs of a 10-step chain per side, submitted at once, "
      f"each step pod simulated for 1 s on the test cluster's scripted node; "
      f"{a.rounds} round(s) per side, each side on a fresh cluster, median over rounds; "
      f"this size {a.total_seconds // 60} min {a.total_seconds % 60} s.")
    w("")
    w(f"toucan: {a.toucan_version} (kube-rs client, no client-side rate limit). "
      f"Argo: workflow-controller {a.argo_version} built from its Go module, "
      f"`--workflow-workers {a.workers} --pod-cleanup-workers {a.workers} --qps {a.qps} --burst {a.burst}`, "
      f"`DEFAULT_REQUEUE_TIME` {a.argo_requeue}, default configmap otherwise.")
    w("")
    w("| figure | toucan | Argo | toucan/Argo |")
    w("|---|---:|---:|---:|")
    meds = {s: {} for s in SIDES}
    for label, get, fmt, _ in FIGURES:
        cells = []
        for s in SIDES:
            results, _ = data[s]
            v = median([safe(get, r) for r in results])
            meds[s][label] = v
            cells.append(fmt.format(v) if v is not None else "—")
        t, g = meds["toucan"][label], meds["argo"][label]
        ratio = f"{t / g:.2f}" if t is not None and g not in (None, 0) else "—"
        w(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    w("")
    w("Runs per minute: higher is better (ratio > 1 favours toucan); every other figure: lower is "
      "better (ratio < 1 favours toucan). Delays by watch are local receive times of the pod "
      "events (dependency's pod seen Succeeded → dependent's pod seen ADDED); API timestamps "
      "(creationTimestamp − container finishedAt) have one-second resolution.")
    for s in SIDES:
        results, errors = data[s]
        for r in results:
            bad = []
            if r.get("failed"):
                bad.append(f"{r['failed']} runs failed")
            if r.get("unfinished"):
                bad.append(f"{r['unfinished']} runs unfinished")
            if r.get("podsFailed"):
                bad.append(f"{r['podsFailed']} pods failed")
            if r.get("duplicatePods"):
                bad.append(f"{r['duplicatePods']} extra pods (retries)")
            if bad:
                w("")
                w(f"**{LABEL[s]}:** " + "; ".join(bad) + ".")
        if errors:
            w("")
            w(f"**{LABEL[s]}: not measured** in {len(errors)} of {a.rounds} round(s): "
              + "; ".join(sorted(set(errors))))
    print("\n".join(out))


def safe(get, r):
    try:
        return get(r)
    except (KeyError, TypeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
