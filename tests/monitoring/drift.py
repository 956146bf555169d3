"""SciPy's and Evidently's values for the drift cases core/tests/drift_scipy.rs generates.

    .venv/bin/python tests/monitoring/drift.py IN.json OUT.json

IN holds columns (name, kind, reference, current, the test to run), embedding sets with the
permutations toucan drew, and p-value lists; OUT gets, per column, Evidently's default test for
it and the named test's score from Evidently, with SciPy's statistic and p-value where SciPy
has the test; per embedding case a NumPy MMD and its p-value over the same permutations; and
SciPy's Benjamini-Hochberg adjusted p-values. Fails (non-zero exit) if a package is missing or
at another version than scripts/setup pins.
"""

import json
import sys
import warnings
from importlib import metadata

PINNED = {"evidently": "0.7.23", "scipy": "1.17.1", "pandas": "2.3.3", "numpy": "2.4.6"}
for name, version in PINNED.items():
    found = metadata.version(name)
    if found != version:
        sys.exit(f"{name} {found} is installed, scripts/setup --monitoring pins {version}")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from evidently.legacy.core import ColumnType  # noqa: E402
from evidently.legacy.calculations.stattests import registry  # noqa: E402
from evidently.legacy.calculations.stattests.z_stattest import proportions_diff_z_stat_ind  # noqa: E402

warnings.simplefilter("ignore")


def series(values, kind):
    return pd.Series(values, dtype=float if kind == "numeric" else object)


def column_case(case):
    kind = ColumnType.Numerical if case["kind"] == "numeric" else ColumnType.Categorical
    ref = series(case["reference"], case["kind"])
    cur = series(case["current"], case["kind"])
    out = {"name": case["name"]}
    out["defaultTest"] = registry.get_stattest(ref, cur, kind, None).name
    test = case["test"]
    # Evidently's own function for the test (chi-squared and Z are registered for categorical
    # columns only; on numbers they run the same code).
    stattest = registry.get_registered_stattest(test, ColumnType.Categorical if test in ("chisquare", "z") else kind)
    result = stattest(ref, cur, kind, case.get("threshold"))
    out["evidentlyScore"] = float(result.drift_score)
    out["evidentlyDrifted"] = bool(result.drifted)
    if test == "ks":
        r = stats.ks_2samp(np.asarray(case["reference"]), np.asarray(case["current"]))
        out["statistic"], out["pValue"] = float(r.statistic), float(r.pvalue)
    elif test == "chisquare":
        keys = sorted(set(ref.unique()) | set(cur.unique()))
        rc, cc = ref.value_counts(), cur.value_counts()
        k_norm = len(cur) / len(ref)
        f_exp = [rc.get(k, 0) * k_norm for k in keys]
        f_obs = [cc.get(k, 0) for k in keys]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = stats.chisquare(f_obs, f_exp)
        out["statistic"], out["pValue"] = float(r.statistic), float(r.pvalue)
    elif test == "z":
        keys = sorted(set(ref.unique()) | set(cur.unique()))
        z = proportions_diff_z_stat_ind(ref.apply(lambda x: 0 if x == keys[0] else 1),
                                        cur.apply(lambda x: 0 if x == keys[0] else 1))
        out["statistic"], out["pValue"] = float(z), float(result.drift_score)
    elif test == "wasserstein":
        ref_np, cur_np = np.asarray(case["reference"]), np.asarray(case["current"])
        out["statistic"] = float(stats.wasserstein_distance(ref_np, cur_np) / max(float(np.std(ref_np)), 0.001))
    else:
        out["statistic"] = float(result.drift_score)
    return out


def mmd_case(case):
    x = np.asarray(case["reference"], dtype=float).reshape(-1, case["dimension"])
    y = np.asarray(case["current"], dtype=float).reshape(-1, case["dimension"])
    pooled = np.vstack([x, y])
    diff = pooled[:, None, :] - pooled[None, :, :]
    squared = np.sum(diff * diff, axis=-1)
    upper = np.triu_indices(len(pooled), k=1)
    median = float(np.median(np.sqrt(squared[upper])))
    sigma = median if median > 0 else 1.0
    kernel = np.exp(-squared / (2 * sigma * sigma))
    n = len(x)

    def mmd(order):
        a, b = order[:n], order[n:]
        return kernel[np.ix_(a, a)].mean() + kernel[np.ix_(b, b)].mean() - 2 * kernel[np.ix_(a, b)].mean()

    observed = mmd(np.arange(len(pooled)))
    # With "enough", stop once that many permuted statistics reached the observed one
    # (Besag and Clifford's sequential p-value: reached / drawn).
    enough = case.get("enough")
    permuted, at_least = [], 0
    for order in case["permutations"]:
        permuted.append(mmd(np.asarray(order)))
        if permuted[-1] >= observed:
            at_least += 1
            if enough is not None and at_least >= enough:
                break
    if enough is not None and at_least >= enough:
        p_value = at_least / len(permuted)
    else:
        p_value = (1 + at_least) / (1 + len(permuted))
    return {"name": case["name"], "statistic": float(observed), "bandwidth": sigma,
            "pValue": p_value, "nullMean": float(np.mean(permuted))}


def finite_or_text(value):
    """JSON has no infinities: write them (and NaN) as "inf", "-inf", "nan"."""
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: finite_or_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_text(v) for v in value]
    return value


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {
        "columns": [column_case(c) for c in cases["columns"]],
        "mmd": [mmd_case(c) for c in cases["mmd"]],
        "bh": [[float(q) for q in stats.false_discovery_control(ps, method="bh")] for ps in cases["bh"]],
    }
    with open(sys.argv[2], "w") as f:
        json.dump(finite_or_text(out), f, allow_nan=False)


if __name__ == "__main__":
    main()
