"""Ingest Fashion-MNIST: parse the IDX files, split train/validation, write a dataset directory.

Reads the four gzipped IDX files of Debian's `dataset-fashion-mnist`, checks their headers,
makes a seeded train/validation split of the 60,000 training images and keeps the official
10,000 test images. Writes OUT/ with train.npz, validation.npz and test.npz (arrays `x`, uint8
N x 28 x 28, and `y`, uint8 labels) and card.json (sizes, class counts, pixel statistics of the
training split, source digests).

Every output byte depends only on the inputs and the seed (no timestamps, fixed zip entry
dates), so re-running this step with unchanged inputs yields the same artifact digest and the
downstream steps stay cached.
"""

import argparse
import gzip
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_UBYTE = 0x08
IMAGE_SHAPE = (28, 28)


class IngestError(Exception):
    """Bad input; the message names the file."""


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes with `ndim` dimensions."""
    if not path.is_file():
        raise IngestError(f"{path}: not found (Debian package dataset-fashion-mnist; run scripts/setup)")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise IngestError(f"{path}: not a readable gzip file: {e}") from e
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IngestError(f"{path}: {len(raw)} bytes, too short for an IDX header of {header_len} bytes")
    zero, dtype, got_ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    magic = int.from_bytes(raw[0:4], "big")
    if zero != 0 or dtype != IDX_UBYTE or got_ndim != ndim:
        expected = (IDX_UBYTE << 8) | ndim
        raise IngestError(
            f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + int(np.prod(dims))
    if len(raw) != expected_len:
        raise IngestError(
            f"{path}: header says {dims} -> {expected_len} bytes, file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (source / name for name in FILES[split])
    x = read_idx(images_path, ndim=3)
    y = read_idx(labels_path, ndim=1)
    if x.shape[1:] != IMAGE_SHAPE:
        raise IngestError(f"{images_path}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
    if len(x) != len(y):
        raise IngestError(f"{images_path}: {len(x)} images but {labels_path.name} has {len(y)} labels")
    if y.size and int(y.max()) >= len(CLASS_NAMES):
        raise IngestError(f"{labels_path}: label {int(y.max())} out of range 0..{len(CLASS_NAMES) - 1}")
    return x, y


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-for-byte reproducible (np.savez stamps the current time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def class_counts(y: np.ndarray) -> dict[str, int]:
    counts = np.bincount(y, minlength=len(CLASS_NAMES))
    return {name: int(n) for name, n in zip(CLASS_NAMES, counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True, help="directory with the four IDX .gz files")
    ap.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--val-size", type=int, default=6000, help="training images held out for validation")
    args = ap.parse_args()

    try:
        x_train_full, y_train_full = load_split(args.source, "train")
        x_test, y_test = load_split(args.source, "test")
    except IngestError as e:
        sys.exit(f"ingest: error: {e}")
    if not 0 < args.val_size < len(x_train_full):
        sys.exit(f"ingest: error: --val-size {args.val_size} must be between 1 and {len(x_train_full) - 1}")

    order = np.random.default_rng(args.seed).permutation(len(x_train_full))
    val_idx, train_idx = np.sort(order[: args.val_size]), np.sort(order[args.val_size :])
    splits = {
        "train": (x_train_full[train_idx], y_train_full[train_idx]),
        "validation": (x_train_full[val_idx], y_train_full[val_idx]),
        "test": (x_test, y_test),
    }

    args.out.mkdir()
    for name, (x, y) in splits.items():
        save_npz(args.out / f"{name}.npz", x=x, y=y)

    pixels = splits["train"][0].astype(np.float64) / 255.0
    card = {
        "name": "fashion-mnist",
        "class_names": CLASS_NAMES,
        "image_shape": list(IMAGE_SHAPE),
        "pixel_stats": {
            "split": "train",
            "scale": "1/255",
            "mean": round(float(pixels.mean()), 6),
            "std": round(float(pixels.std()), 6),
        },
        "split": {"seed": args.seed, "validation_size": args.val_size},
        "splits": {
            name: {"count": int(len(y)), "class_counts": class_counts(y)}
            for name, (_, y) in splits.items()
        },
        "sources": {
            p.name: {"sha256": sha256_file(p)}
            for p in sorted(args.source / n for pair in FILES.values() for n in pair)
        },
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n")

    sizes = ", ".join(f"{name} {len(y)}" for name, (_, y) in splits.items())
    print(f"ingest: wrote {args.out}: {sizes}; pixel mean {card['pixel_stats']['mean']:.4f} "
          f"std {card['pixel_stats']['std']:.4f}")


if __name__ == "__main__":
    main()
