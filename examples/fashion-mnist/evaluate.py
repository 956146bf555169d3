"""Evaluate a trained model on the official Fashion-MNIST test set.

Writes a JSON report (accuracy, per-class precision/recall/F1/support, macro averages and the
confusion matrix with rows = true class, columns = predicted class) and the test accuracy as a
plain number (e.g. 0.8412), which the pipeline's `when` on the export step compares with the
`min_accuracy` param.
"""

import argparse
import json
from pathlib import Path

import numpy as np


def per_class_metrics(confusion: np.ndarray, names: list[str]) -> list[dict]:
    rows = []
    for k, name in enumerate(names):
        tp = int(confusion[k, k])
        predicted, actual = int(confusion[:, k].sum()), int(confusion[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({
            "class": name,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": actual,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset directory written by ingest.py")
    ap.add_argument("--model", type=Path, required=True, help="model file written by train.py")
    ap.add_argument("--report", type=Path, required=True, help="JSON report to write")
    ap.add_argument("--accuracy", type=Path, required=True, help="file to write the test accuracy to")
    args = ap.parse_args()

    with np.load(args.model) as m:
        w, b = m["weights"], m["bias"]
        mean, std = float(m["pixel_mean"]), float(m["pixel_std"])
        names = [str(n) for n in m["class_names"]]
    with np.load(args.data / "test.npz") as t:
        x, y = t["x"], t["y"]

    features = (x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0) - np.float32(mean)) / np.float32(std)
    predicted = np.argmax(features @ w + b, axis=1)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)

    accuracy = float(np.trace(confusion) / confusion.sum())
    classes = per_class_metrics(confusion, names)
    report = {
        "split": "test",
        "count": int(len(y)),
        "accuracy": round(accuracy, 4),
        "macro": {
            metric: round(float(np.mean([c[metric] for c in classes])), 4)
            for metric in ("precision", "recall", "f1")
        },
        "classes": classes,
        "confusion_matrix": {"labels": names, "rows_true_columns_predicted": confusion.tolist()},
    }
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    args.accuracy.write_text(f"{accuracy:.4f}")

    print(f"test accuracy {accuracy:.4f} on {len(y)} images (macro F1 {report['macro']['f1']:.4f})")
    print(f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>7}")
    for c in classes:
        print(f"{c['class']:<12} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['f1']:>7.4f}")


if __name__ == "__main__":
    main()
