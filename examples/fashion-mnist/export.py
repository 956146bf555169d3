"""Package the trained model for serving: weights, preprocessing config and a model card.

The training-time standardization is folded into the weights, so a consumer only scales pixels
by 1/255:  logits = (pixels / 255).reshape(784) @ weights + bias;  class = argmax(logits).
Writes OUT/ with weights.npz (weights 784 x 10, bias 10; float32), preprocessing.json and
model.json (class names, the evaluation's test metrics, the digest of the exported weights).
"""

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-for-byte reproducible (np.savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model file written by train.py")
    ap.add_argument("--report", type=Path, required=True, help="report written by evaluate.py")
    ap.add_argument("--out", type=Path, required=True, help="export directory to create")
    args = ap.parse_args()

    with np.load(args.model) as m:
        w, b = m["weights"].astype(np.float64), m["bias"].astype(np.float64)
        mean, std = float(m["pixel_mean"]), float(m["pixel_std"])
        names = [str(n) for n in m["class_names"]]
    report = json.loads(args.report.read_text())

    # ((x - mean) / std) @ w + b  ==  x @ (w / std) + (b - mean / std * sum_i w_i)
    folded_w = (w / std).astype(np.float32)
    folded_b = (b - mean / std * w.sum(axis=0)).astype(np.float32)

    # Self-check on random images: the folded model must give the trained model's logits.
    probe = np.random.default_rng(0).integers(0, 256, size=(256, w.shape[0])) / 255.0
    drift = np.abs((probe @ folded_w + folded_b) - (((probe - mean) / std) @ w + b)).max()
    if drift > 1e-3:
        sys.exit(f"export: error: folded weights differ from the trained model by {drift:.2e}")

    args.out.mkdir()
    save_npz(args.out / "weights.npz", weights=folded_w, bias=folded_b)
    preprocessing = {
        "input_shape": [28, 28],
        "input_dtype": "uint8",
        "scale": 1 / 255,
        "flatten": "row-major, 784 values",
        "logits": "flattened_scaled_pixels @ weights + bias",
        "prediction": "argmax(logits) indexes class_names",
    }
    (args.out / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    card = {
        "name": "fashion-mnist-softmax",
        "kind": "multinomial logistic regression",
        "class_names": names,
        "metrics": {
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro"]["f1"],
            "test_count": report["count"],
        },
        "weights_sha256": hashlib.sha256((args.out / "weights.npz").read_bytes()).hexdigest(),
    }
    (args.out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"export: wrote {args.out} (test accuracy {report['accuracy']:.4f}, "
          f"weights sha256 {card['weights_sha256'][:12]})")


if __name__ == "__main__":
    main()
