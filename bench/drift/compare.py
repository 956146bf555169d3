"""Runs toucan drift and Evidently's DataDriftPreset on the same Parquet tables, one after the
other, and measures each process's wall time (reading the files included) and peak resident
memory (its rusage); then compares every column's score to 1e-9 relative and prints a
Markdown section.

    python bench/drift/compare.py TOUCAN DIR LABEL
"""

import json
import os
import subprocess
import sys
import time

TOLERANCE = 1e-9
HERE = os.path.dirname(os.path.abspath(__file__))


def measured(argv, stdout):
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=stdout)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv[0]} failed with status {status}")
    return wall, usage.ru_maxrss * 1024


def main():
    toucan, directory, label = sys.argv[1], sys.argv[2], sys.argv[3]
    reference = os.path.join(directory, "reference.parquet")
    current = os.path.join(directory, "current.parquet")
    toucan_json = os.path.join(directory, "toucan.json")
    evidently_json = os.path.join(directory, "evidently.json")
    with open(toucan_json, "w") as out:
        toucan_wall, toucan_rss = measured(
            [toucan, "drift", "--reference", reference, "--current", current, "-o", "json"], out)
    evidently_wall, evidently_rss = measured(
        [sys.executable, os.path.join(HERE, "evidently_drift.py"), reference, current, evidently_json], None)
    with open(toucan_json) as f:
        ours = {c["column"]: c for c in json.load(f)["columns"]}
    with open(evidently_json) as f:
        theirs = json.load(f)
    worst, mismatches, drifted = 0.0, [], []
    for column, their in sorted(theirs.items()):
        mine = ours[column]
        a, b = mine["score"], their["score"]
        relative = abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0
        worst = max(worst, relative)
        if relative > TOLERANCE or mine["test"] != "wasserstein" or their["method"] != "Wasserstein distance (normed)":
            mismatches.append(f"{column}: toucan {mine['test']} {a!r}, Evidently {their['method']} {b!r}")
        if mine["drifted"]:
            drifted.append(column)
    print(f"### {label}\n")
    print("| | wall time (read + report) | peak RSS |")
    print("|---|---:|---:|")
    print(f"| toucan drift | {toucan_wall:.2f} s | {toucan_rss / 2**20:.0f} MiB |")
    print(f"| Evidently DataDriftPreset | {evidently_wall:.2f} s | {evidently_rss / 2**20:.0f} MiB |")
    print(f"| **Evidently / toucan** | **{evidently_wall / toucan_wall:.1f}x** | **{evidently_rss / toucan_rss:.1f}x** |")
    print()
    print(f"Scores: {len(theirs)} columns compared, largest relative difference {worst:.1e} "
          f"({'all equal to 1e-9' if not mismatches else str(len(mismatches)) + ' differ'}); "
          f"drifted per toucan: {', '.join(drifted) or 'none'}.\n")
    for line in mismatches:
        print(f"- {line}")
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
