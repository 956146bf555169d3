"""Reference figures for toucan's continuous evaluation (core/src/monitoring/evaluation).

    .venv/bin/python tests/monitoring/evaluation.py IN OUT

IN is JSON: {"classes": [name, ...], "labels": [true class index per record], "predicted":
[predicted class index per record], "probabilities": [[probability per class] per record],
"confidence": level, "bins": calibration bins, "proportions": [[successes, trials], ...]}.
OUT receives every figure computed independently of toucan: accuracy, macro precision, recall
and F1, the log loss and the confusion matrix by scikit-learn; the expected calibration error
with numpy (top-class probability, equal-width bins over (0, 1]); and for each proportion its
Wilson score interval, by statsmodels' proportion_confint(method="wilson") when statsmodels is
installed, else by the closed form with scipy's normal quantile.
core/tests/evaluation_sklearn.rs compares them with toucan's to 1e-9.

Exits 3 with a message when scikit-learn or scipy is missing or scikit-learn is not the
version toucan is checked against.
"""

import json
import sys

SKLEARN_VERSION = "1.9.1"

try:
    import numpy as np
    import sklearn
    from scipy.stats import norm
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
    )
except ImportError as e:
    print(f"evaluation.py: {e}: run scripts/setup to make the venv", file=sys.stderr)
    sys.exit(3)

if sklearn.__version__ != SKLEARN_VERSION:
    print(
        f"evaluation.py: scikit-learn is {sklearn.__version__}, expected {SKLEARN_VERSION}: "
        "run scripts/setup",
        file=sys.stderr,
    )
    sys.exit(3)

try:
    from statsmodels.stats.proportion import proportion_confint
except ImportError:
    proportion_confint = None


def wilson(successes, trials, confidence):
    if proportion_confint is not None:
        low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
        return [float(low), float(high)]
    z = norm.isf((1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z**2 / trials
    center = (p + z**2 / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    return [float(max(center - half, 0.0)), float(min(center + half, 1.0))]


def expected_calibration_error(labels, predicted, probabilities, bins):
    confidence = probabilities[np.arange(len(predicted)), predicted]
    correct = labels == predicted
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def main(in_path, out_path):
    with open(in_path) as f:
        case = json.load(f)
    k = len(case["classes"])
    labels = np.asarray(case["labels"], dtype=np.int64)
    predicted = np.asarray(case["predicted"], dtype=np.int64)
    probabilities = np.asarray(case["probabilities"], dtype=np.float64).reshape(len(labels), k)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0
    )
    sums_to_one = np.isclose(probabilities.sum(axis=1), 1, rtol=np.sqrt(np.finfo(float).eps))
    in_range = ((probabilities >= 0) & (probabilities <= 1)).all()
    loss = (
        float(log_loss(labels, probabilities, labels=list(range(k))))
        if in_range and sums_to_one.all()
        else None
    )
    out = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macroPrecision": float(precision),
        "macroRecall": float(recall),
        "macroF1": float(f1),
        "logLoss": loss,
        "expectedCalibrationError": expected_calibration_error(
            labels, predicted, probabilities, case["bins"]
        ),
        "confusionMatrix": confusion_matrix(labels, predicted, labels=list(range(k))).tolist(),
        "wilson": [wilson(s, n, case["confidence"]) for s, n in case["proportions"]],
        "wilsonMethod": "statsmodels" if proportion_confint is not None else "closed form",
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
