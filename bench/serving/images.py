#!/usr/bin/env python3
"""The images bench/serving/run sends: the body wrk sends, and the check that every server
answers alike before anything is timed.

  body   writes one TF Serving v1 `:predict` body, `{"instances": [{"b64": "<PNG>"}]}`, with the
         first image of a toucan dataset's split as a PNG (grey or RGB as the dataset is).
  agree  sends the split's first N images, one per request, to every server given, and exits 1
         unless each server's class is the same for every image; prints one JSON line: the
         images sent, how many each server got right, and the largest difference between any
         server's probabilities and the first's.

  python bench/serving/images.py body --data DIR --out body.json
  python bench/serving/images.py agree --data DIR --images 200 \
      kserve=http://127.0.0.1:8080/v1/models/fashion:predict toucan=http://...
"""

import argparse
import base64
import io
import json
import sys
from pathlib import Path

import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from torch_cnn import Split, open_dataset  # noqa: E402


def png_images(data: Path, split: str, count: int) -> tuple[list[bytes], list[int]]:
    """The split's first `count` images as PNG files, and their labels."""
    index, _ = open_dataset(data)
    records = Split(data, index, split)
    count = min(count, len(records))
    if count == 0:
        sys.exit(f"images: the {split} split of {data} is empty")
    images = []
    for pixels in records.pixels[:count].numpy():
        img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        out = io.BytesIO()
        img.save(out, format="PNG")
        images.append(out.getvalue())
    return images, records.labels[:count].tolist()


def body_of(png: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode()


def body(args) -> None:
    (png,), _ = png_images(args.data, args.split, 1)
    args.out.write_bytes(body_of(png))


def agree(args) -> None:
    servers = []
    for spec in args.servers:
        name, sep, url = spec.partition("=")
        if not sep or not url:
            sys.exit(f"images: '{spec}' is not NAME=URL")
        servers.append((name, url))
    images, labels = png_images(args.data, args.split, args.images)
    session = requests.Session()
    answers = {name: [] for name, _ in servers}
    for i, png in enumerate(images):
        for name, url in servers:
            r = session.post(url, data=body_of(png), headers={"Content-Type": "application/json"})
            if r.status_code != 200:
                sys.exit(f"images: {name} answered image {i} with HTTP {r.status_code}: "
                         f"{r.text[:500]}")
            (prediction,) = r.json()["predictions"]
            answers[name].append(prediction)
    first, reference = servers[0][0], answers[servers[0][0]]
    disagreements = [
        f"image {i}: " + ", ".join(f"{name} {answers[name][i]['class']}" for name, _ in servers)
        for i in range(len(images))
        if len({answers[name][i]["label"] for name, _ in servers}) > 1
    ]
    if disagreements:
        shown = "; ".join(disagreements[:5])
        more = f" and {len(disagreements) - 5} more" if len(disagreements) > 5 else ""
        sys.exit(f"images: the servers disagree on {len(disagreements)} of {len(images)} "
                 f"images: {shown}{more}")
    max_diff = max(
        abs(a - b)
        for name, _ in servers[1:]
        for mine, theirs in zip(answers[name], reference)
        for a, b in zip(mine["probabilities"], theirs["probabilities"])
    ) if len(servers) > 1 else 0.0
    print(json.dumps({
        "images": len(images),
        "correct": {name: sum(p["label"] == y for p, y in zip(answers[name], labels))
                    for name, _ in servers},
        "max_probability_difference": max_diff,
        "reference": first,
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, required=True, help="a toucan dataset directory")
    common.add_argument("--split", default="test")
    b = sub.add_parser("body", parents=[common], help="write the body wrk sends")
    b.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("agree", parents=[common], help="check that the servers answer alike")
    a.add_argument("--images", type=int, default=200)
    a.add_argument("servers", nargs="+", metavar="NAME=URL", help="a server's :predict URL")
    args = parser.parse_args()
    if args.command == "body":
        body(args)
    else:
        agree(args)


if __name__ == "__main__":
    main()
