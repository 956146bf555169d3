"""Train a softmax (multinomial logistic) regression on the ingested Fashion-MNIST dataset.

numpy only: pixels scaled to [0, 1] and standardized with the training split's mean and std from
card.json, then minibatch Adam on the mean cross-entropy with a cosine learning-rate decay to zero
over the run (the last, small steps settle the weights; worth about half a point). Seeded, so the same inputs give the
same model. Prints one JSON line per epoch (loss, accuracy, val_accuracy) for the run's logs,
writes the model (npz: weights, bias and the normalization it was trained with) and the final
validation accuracy as a plain number.
"""

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def load(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data / f"{split}.npz") as z:
        return z["x"], z["y"]


def features(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0)
    return (flat - np.float32(mean)) / np.float32(std)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-for-byte reproducible (np.savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset directory written by ingest.py")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--learning-rate", type=float, default=0.002, help="peak Adam step size")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", type=Path, required=True, help="model file to write (npz)")
    ap.add_argument("--val-accuracy", type=Path, required=True, help="file to write the validation accuracy to")
    args = ap.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or not args.learning_rate > 0:
        sys.exit("train: error: --epochs and --batch-size must be >= 1 and --learning-rate > 0")

    card = json.loads((args.data / "card.json").read_text())
    mean, std = card["pixel_stats"]["mean"], card["pixel_stats"]["std"]
    classes = len(card["class_names"])
    x_train, y_train = load(args.data, "train")
    x_val, y_val = load(args.data, "validation")
    x_train, x_val = features(x_train, mean, std), features(x_val, mean, std)
    n, d = x_train.shape

    rng = np.random.default_rng(args.seed)
    w = (rng.standard_normal((d, classes)) * 0.01).astype(np.float32)
    b = np.zeros(classes, dtype=np.float32)
    params = [w, b]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    total_steps = args.epochs * -(-n // args.batch_size)

    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, args.batch_size):
            idx = order[start : start + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            probs = softmax(xb @ w + b)
            picked = probs[np.arange(len(yb)), yb]
            loss_sum += float(-np.log(np.maximum(picked, 1e-12)).sum())
            correct += int((probs.argmax(axis=1) == yb).sum())

            # Gradient of the mean cross-entropy with respect to the logits.
            grad_logits = probs
            grad_logits[np.arange(len(yb)), yb] -= 1.0
            grad_logits /= len(yb)
            grads = [xb.T @ grad_logits, grad_logits.sum(axis=0)]

            cosine = 0.5 * (1 + np.cos(np.pi * step / total_steps))
            step += 1
            bias_correction = np.sqrt(1 - ADAM_BETA2**step) / (1 - ADAM_BETA1**step)
            lr_t = args.learning_rate * cosine * bias_correction
            for p, g, m_i, v_i in zip(params, grads, m, v):
                m_i *= ADAM_BETA1
                m_i += (1 - ADAM_BETA1) * g
                v_i *= ADAM_BETA2
                v_i += (1 - ADAM_BETA2) * g * g
                p -= (lr_t * m_i / (np.sqrt(v_i) + ADAM_EPS)).astype(np.float32)

        val_accuracy = accuracy(w, b, x_val, y_val)
        print(json.dumps({
            "epoch": epoch,
            "loss": round(loss_sum / n, 4),
            "accuracy": round(correct / n, 4),
            "val_accuracy": round(val_accuracy, 4),
            "seconds": round(time.perf_counter() - started, 2),
        }), flush=True)

    save_npz(
        args.model,
        weights=w,
        bias=b,
        pixel_mean=np.float32(mean),
        pixel_std=np.float32(std),
        class_names=np.array(card["class_names"]),
    )
    args.val_accuracy.write_text(f"{val_accuracy:.4f}")


if __name__ == "__main__":
    main()
