"""scikit-learn's figures for toucan's classification metrics (worker/src/metrics).

    .venv/bin/python tests/sklearn/metrics.py IN OUT

IN is JSON: {"classes": [name, ...], "labels": [class index per record], "scores": [[score per
class] per record], "slices": {column: [value per record]}, "top_k": [k, ...]}. OUT receives a
report in the shape of toucan-worker's report.json with every number computed by scikit-learn;
worker/tests/metrics_sklearn.rs compares the two to 1e-9.

Where toucan gives a value that scikit-learn leaves undefined, this script applies toucan's
documented rule to scikit-learn's own per-class numbers, and uses scikit-learn's average as is
whenever it is defined:

- ROC AUC of a class with no positives or no negatives, and average precision of a class with no
  positives, are null (scikit-learn: NaN, or 0.0 with a warning). Their macro and weighted
  averages are then taken over the classes where they are defined.
- Top-k accuracy with two classes: scikit-learn thresholds a single positive-class column there;
  toucan ranks both columns with scikit-learn's multiclass rule (ties: highest index first),
  which this script reaches by adding a third column scored below every other score.
- Log loss is null where scikit-learn raises (a score outside [0, 1]) or warns that the rows do
  not sum to one.

Exits 3 with a message when scikit-learn is missing or not the version toucan is checked against.
"""

import json
import sys
import warnings

SKLEARN_VERSION = "1.9.1"
REPORT_FORMAT = "toucan.evaluation/v1"

try:
    import numpy as np
    import sklearn
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
        top_k_accuracy_score,
    )
except ImportError as e:
    print(f"metrics.py: {e}: run scripts/setup to install scikit-learn", file=sys.stderr)
    sys.exit(3)

if sklearn.__version__ != SKLEARN_VERSION:
    print(
        f"metrics.py: scikit-learn is {sklearn.__version__}, expected {SKLEARN_VERSION}: "
        "run scripts/setup",
        file=sys.stderr,
    )
    sys.exit(3)


def main(in_path, out_path):
    with open(in_path) as f:
        case = json.load(f)
    classes = case["classes"]
    labels = np.asarray(case["labels"], dtype=np.int64)
    scores = np.asarray(case["scores"], dtype=np.float64).reshape(len(labels), len(classes))
    top_k = sorted(set(case["top_k"]))

    slices = []
    for column in sorted(case.get("slices", {})):
        values = np.asarray(case["slices"][column], dtype=object)
        slices.append(
            {
                "column": column,
                "values": [
                    {
                        "value": value,
                        "metrics": evaluate(
                            labels[values == value], scores[values == value], classes, top_k
                        ),
                    }
                    for value in sorted(set(values.tolist()))
                ],
            }
        )
    report = {
        "format": REPORT_FORMAT,
        "classes": classes,
        "overall": evaluate(labels, scores, classes, top_k),
        "slices": slices,
    }
    with open(out_path, "w") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")


def evaluate(y, scores, classes, top_k):
    k = len(classes)
    every_class = list(range(k))
    predicted = np.argmax(scores, axis=1)
    indicator = (y[:, None] == np.arange(k)[None, :]).astype(np.int64)

    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=every_class, zero_division=0
    )
    roc_auc = [class_roc_auc(indicator[:, c], scores[:, c]) for c in every_class]
    average_precision = [
        class_average_precision(indicator[:, c], scores[:, c]) for c in every_class
    ]
    per_class = [
        {
            "class": classes[c],
            "support": int(support[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "roc_auc": roc_auc[c],
            "average_precision": average_precision[c],
        }
        for c in every_class
    ]

    def averages(average):
        # labels=None: the classes that occur in the truth or the predictions.
        p, r, f, _ = precision_recall_fscore_support(
            y, predicted, average=average, zero_division=0
        )
        return {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "roc_auc": average_roc_auc(y, indicator, scores, roc_auc, support, average),
            "average_precision": average_average_precision(
                indicator, scores, average_precision, support, average
            ),
        }

    return {
        "records": int(len(y)),
        "accuracy": float(accuracy_score(y, predicted)),
        "top_k_accuracy": [
            {"k": t, "accuracy": top_k_accuracy(y, scores, t)} for t in top_k
        ],
        "log_loss": log_loss_if_probabilities(y, scores, every_class),
        "per_class": per_class,
        "macro_avg": averages("macro"),
        "weighted_avg": averages("weighted"),
        "confusion_matrix": confusion_matrix(y, predicted, labels=every_class).tolist(),
    }


def class_roc_auc(positive, column):
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, column))


def class_average_precision(positive, column):
    if not positive.any():
        return None
    return float(average_precision_score(positive, column))


def average_roc_auc(y, indicator, scores, per_class, support, average):
    if any(v is None for v in per_class):
        return average_where_defined(per_class, support, average)
    k = scores.shape[1]
    if k > 2 and np.allclose(1, scores.sum(axis=1)):
        return float(
            roc_auc_score(y, scores, multi_class="ovr", average=average, labels=list(range(k)))
        )
    # Raw scores or two classes: the same one-vs-rest computation through the multilabel form,
    # which has no sum-to-one check (scikit-learn's ovr binarizes y and calls it).
    return float(roc_auc_score(indicator, scores, average=average))


def average_average_precision(indicator, scores, per_class, support, average):
    if any(v is None for v in per_class):
        return average_where_defined(per_class, support, average)
    return float(average_precision_score(indicator, scores, average=average))


def average_where_defined(per_class, support, average):
    """toucan's rule: the mean over the classes with a value, by support for "weighted"."""
    pairs = [
        (v, 1.0 if average == "macro" else float(s))
        for v, s in zip(per_class, support)
        if v is not None
    ]
    total = sum(w for _, w in pairs)
    if not pairs or total == 0:
        return None
    return float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs]))


def top_k_accuracy(y, scores, k):
    if scores.shape[1] == 2:
        lowest = scores.min()
        below_all = np.full((len(y), 1), lowest - abs(lowest) - 1.0)
        scores = np.hstack([scores, below_all])
    with warnings.catch_warnings():
        # "k greater than or equal to n_classes ... perfect score": expected for the largest k.
        warnings.simplefilter("ignore")
        return float(
            top_k_accuracy_score(y, scores, k=k, labels=list(range(scores.shape[1])))
        )


def log_loss_if_probabilities(y, scores, every_class):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = log_loss(y, scores, labels=every_class)
        except ValueError:
            return None
    if any("do not sum to one" in str(w.message) for w in caught):
        return None
    return float(value)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: metrics.py IN OUT")
    main(sys.argv[1], sys.argv[2])
