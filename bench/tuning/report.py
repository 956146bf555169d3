"""Turns the JSON lines of bench/tuning/run into bench/results/tuning.md (on stdout)."""

import argparse
import datetime
import json
import statistics
from collections import defaultdict

FUNCTION_NOTES = {
    "branin": "Branin, 2-D, min 0.397887",
    "hartmann6": "Hartmann-6, 6-D, min -3.32237",
    "noisy1d": "Forrester 1-D + N(0, 0.5²) noise, min -6.02074",
    "mixed": "mixed: categorical + conditional int/log-double + discrete, min 0",
}
SMOOTH = {"branin", "hartmann6"}


def load(path, side):
    runs, timings = defaultdict(list), {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            key = (side, row["sampler"])
            if row["kind"] == "run":
                runs[(row["function"], row["budget"]) + key].append(row)
            else:
                timings[key] = row
    return runs, timings


def fmt(x):
    if x == 0:
        return "0"
    if abs(x) >= 100 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4f}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("toucan")
    p.add_argument("optuna")
    p.add_argument("--revision", default="unknown")
    p.add_argument("--optuna", dest="optuna_version", default="?")
    p.add_argument("--seeds", type=int)
    p.add_argument("--minutes", type=int)
    p.add_argument("--cpus", type=int)
    a = p.parse_args()
    runs, timings = load(a.toucan, "toucan")
    r2, t2 = load(a.optuna, "optuna")
    runs.update(r2)
    timings.update(t2)

    def med(function, budget, side, sampler, field):
        rows = runs.get((function, budget, side, sampler))
        return statistics.median(r[field] for r in rows) if rows else None

    cells = sorted({(f, b) for (f, b, _, _) in runs}, key=lambda k: (list(FUNCTION_NOTES).index(k[0]), k[1]))
    out = []
    out.append("# Tuning: toucan's samplers vs Optuna\n")
    out.append(
        f"`make bench-tuning` ({datetime.date.today()}), toucan at {a.revision}, Optuna "
        f"{a.optuna_version}, {a.cpus} CPUs, {a.seeds} seeds per cell, {a.minutes} min in all. "
        "Medians over seeds of the best observed value and of its regret (the noiseless "
        "function at the best observed trial minus the optimum); lower is better. toucan's "
        "TPE and GP run through `decide` one trial at a time; Optuna's are "
        "`TPESampler(multivariate=True)` and `GPSampler()`, both with 10 random startup "
        "trials and the same seed numbers (the generators differ, so the trials do too). The "
        "GP columns stop at the GP budgets of the run (`BENCH_GP_BUDGETS`).\n")
    out.append("| function | trials | toucan TPE | Optuna TPE | toucan GP | Optuna GP |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for f, b in cells:
        row = [FUNCTION_NOTES.get(f, f), str(b)]
        for side, sampler in [("toucan", "tpe"), ("optuna", "tpe"), ("toucan", "gp"), ("optuna", "gp")]:
            best = med(f, b, side, sampler, "best")
            regret = med(f, b, side, sampler, "regret")
            row.append("–" if best is None else f"{fmt(best)} (regret {fmt(regret)})")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("Against the targets (median regret; a ratio below 1 means toucan's is lower):\n")
    out.append("| function | trials | toucan TPE / Optuna TPE | toucan GP / best TPE | toucan GP / Optuna GP |")
    out.append("|---|---:|---:|---:|---:|")
    for f, b in cells:
        tt, ot = med(f, b, "toucan", "tpe", "regret"), med(f, b, "optuna", "tpe", "regret")
        tg, og = med(f, b, "toucan", "gp", "regret"), med(f, b, "optuna", "gp", "regret")

        def ratio(x, y):
            if x is None or y is None:
                return "–"
            if y == 0:
                return "0 / 0" if x == 0 else "∞"
            return f"{x / y:.3g}"

        best_tpe = None if tt is None or ot is None else min(tt, ot)
        smooth = "" if f in SMOOTH else " (not smooth)"
        out.append(f"| {f}{smooth} | {b} | {ratio(tt, ot)} | {ratio(tg, best_tpe)} | {ratio(tg, og)} |")
    out.append("")
    if timings:
        out.append("Time per suggestion with 999 finished trials (Hartmann-6, the earlier trials "
                   "random; toucan: one `decide` call, Optuna: `study.ask()` and the six "
                   "`suggest_float` calls; median of repeats):\n")
        out.append("| sampler | toucan | Optuna | toucan / Optuna |")
        out.append("|---|---:|---:|---:|")
        for sampler in ["tpe", "gp"]:
            t, o = timings.get(("toucan", sampler)), timings.get(("optuna", sampler))
            if t and o:
                out.append(f"| {sampler.upper()} (trial {t['trials']}) | {t['seconds'] * 1e3:.2f} ms | "
                           f"{o['seconds'] * 1e3:.1f} ms | {t['seconds'] / o['seconds']:.3f} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
