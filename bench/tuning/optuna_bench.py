"""Optuna's side of the tuning benchmark (bench/tuning/run, `make bench-tuning`).

The same test functions, seeds and budgets as toucan's side (core/examples/tuning_bench.rs),
with Optuna's TPESampler(multivariate=True) and GPSampler at their defaults, seeded. Prints
the same JSON lines: one "run" per sampler, function, seed and budget (the budgets of a seed
are prefixes of one study), and one "timing" per sampler: the median wall time of asking for
trial N (study.ask() and the suggest calls) with N - 1 finished random trials on Hartmann-6.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)

A = [[10.0, 3.0, 17.0, 3.5, 1.7, 8.0], [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
     [3.0, 3.5, 1.7, 10.0, 17.0, 8.0], [17.0, 8.0, 0.05, 10.0, 0.1, 14.0]]
P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
     [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
     [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
     [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]
ALPHA = [1.0, 1.2, 3.0, 3.2]


def branin(trial):
    x1 = trial.suggest_float("x1", -5, 10)
    x2 = trial.suggest_float("x2", 0, 15)
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(trial):
    x = [trial.suggest_float(f"x{i}", 0, 1) for i in range(1, 7)]
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6)))
                for i in range(4))


def forrester(trial):
    x = trial.suggest_float("x", 0, 1)
    return (6 * x - 2) ** 2 * math.sin(12 * x - 4)


def mixed(trial):
    model = trial.suggest_categorical("model", ["linear", "tree", "net"])
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_categorical("y", [0.1, 0.2, 0.5, 1.0, 2.0])
    shared = (x - 1) ** 2 / 10 + abs(math.log10(y) - math.log10(0.5))
    if model == "linear":
        return shared + 1.0
    if model == "tree":
        depth = trial.suggest_int("depth", 1, 10)
        return shared + 0.5 + (depth - 6) ** 2 / 20
    lr = trial.suggest_float("lr", 1e-4, 1, log=True)
    layers = trial.suggest_int("layers", 1, 4)
    return shared + (math.log10(lr) + 2.5) ** 2 / 2 + (layers - 3) ** 2 / 4


# name: (objective, optimum, noise standard deviation)
FUNCTIONS = {
    "branin": (branin, 0.397887357729738, 0.0),
    "hartmann6": (hartmann6, -3.322368011415515, 0.0),
    "noisy1d": (forrester, -6.020740055766075, 0.5),
    "mixed": (mixed, 0.0, 0.0),
}


def sampler(name, seed):
    if name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name}")


def run(function, sampler_name, seed, budgets):
    objective, optimum, noise = FUNCTIONS[function]
    study = optuna.create_study(sampler=sampler(sampler_name, seed))
    best, best_truth = math.inf, math.nan
    started = time.perf_counter()
    for n in range(1, max(budgets) + 1):
        trial = study.ask()
        truth = objective(trial)
        observed = truth + noise * np.random.default_rng([seed, trial.number]).standard_normal()
        study.tell(trial, observed)
        if observed < best:
            best, best_truth = observed, truth
        if n in budgets:
            print(json.dumps({
                "kind": "run", "sampler": sampler_name, "function": function, "seed": seed,
                "budget": n, "best": best, "regret": best_truth - optimum,
                "seconds": time.perf_counter() - started,
            }), flush=True)


def timing(sampler_name, trials, reps):
    rng = np.random.default_rng(0)
    dist = optuna.distributions.FloatDistribution(0, 1)
    earlier = []
    for _ in range(trials - 1):
        params = {f"x{i}": float(rng.random()) for i in range(1, 7)}
        fixed = optuna.trial.FixedTrial(params)
        earlier.append(optuna.trial.create_trial(
            params=params, distributions={k: dist for k in params}, value=hartmann6(fixed)))
    times = []
    for _ in range(reps):
        study = optuna.create_study(sampler=sampler(sampler_name, 0))
        study.add_trials(earlier)
        t = time.perf_counter()
        trial = study.ask()
        for i in range(1, 7):
            trial.suggest_float(f"x{i}", 0, 1)
        times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"kind": "timing", "sampler": sampler_name, "trials": trials,
                      "seconds": times[len(times) // 2]}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="50,200")
    parser.add_argument("--samplers", default="tpe,gp")
    parser.add_argument("--functions", default="branin,hartmann6,noisy1d,mixed")
    parser.add_argument("--timing-trials", type=int, default=1000)
    parser.add_argument("--timing-reps", type=int, default=3)
    args = parser.parse_args()
    budgets = sorted({int(b) for b in args.budgets.split(",") if b})
    samplers = [s for s in args.samplers.split(",") if s]
    for function in [f for f in args.functions.split(",") if f]:
        if function not in FUNCTIONS:
            raise SystemExit(f"unknown function {function}")
        for name in samplers:
            for seed in range(args.seeds):
                run(function, name, seed, budgets)
    if args.timing_trials > 0:
        for name in samplers:
            timing(name, args.timing_trials, args.timing_reps)


if __name__ == "__main__":
    sys.exit(main())
