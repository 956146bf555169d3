#!/usr/bin/env python3
"""KServe's Python ModelServer serving toucan-worker's CNN in PyTorch, for bench/serving/run.

The peer of `toucan-worker serve` in the serving benchmark: a `kserve.Model` whose network is
`bench/torch_cnn.py`'s `Cnn` (the worker's `cnn` as an `nn.Module`), loaded from the very file
`toucan-worker serve` loads, an exported bundle: its tensors are the weights, and its
safetensors metadata (`toucan.model`) is the model card with the classes, the input size and
channels, and the normalization. Requests are TF Serving's v1 `:predict`, as toucan's server
takes them: `{"instances": [{"b64": "<PNG or JPEG>"}, ...]}`. Each instance is decoded with
Pillow, resized to the card's size when it differs (bilinear, the triangle filter the worker
uses), converted to grey or RGB as the card says, scaled to [0, 1] and normalized with the
card's mean and std; the answer is toucan's:
`{"predictions": [{"class", "label", "probabilities"}, ...]}` (softmax in f64, as the worker).

  python bench/serving/kserve_cnn.py --bundle BUNDLE --model_name fashion --threads 2 \
      --http_port 8080

Any of KServe's own ModelServer flags (`--workers`, `--http_port`, ...) is taken as KServe
takes it. What this script sets differently from KServe's defaults, so that both servers do
the same work: no gRPC server (toucan's serves gRPC only when asked), and no line logged per
request (KServe's latency and timing logs and uvicorn's access log; toucan's server writes
none). `predict` is a plain method, as in KServe's custom-model examples: the ModelServer calls
it on its event loop, one request at a time.
"""

import argparse
import base64
import io
import json
import logging
import struct
import sys
from pathlib import Path

import kserve
import torch
from kserve import model_server
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from torch_cnn import Cnn, read_safetensors  # noqa: E402

# The metadata key of the model card in an exported bundle (worker/src/ml/infer.rs CARD_KEY).
CARD_KEY = "toucan.model"
# Below this the worker leaves a channel unscaled (worker/src/ml/data.rs).
MIN_STD = 1e-8


def read_card(bundle: Path) -> dict:
    """The model card in an exported bundle's safetensors header."""
    with bundle.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    card = (header.get("__metadata__") or {}).get(CARD_KEY)
    if card is None:
        sys.exit(f"kserve_cnn: {bundle}: no {CARD_KEY} metadata (not a `toucan-worker export`)")
    return json.loads(card)


class FashionCnn(kserve.Model):
    """The worker's CNN behind KServe's v1 predict."""

    def __init__(self, name: str, bundle: Path, threads: int | None):
        super().__init__(name)
        self.bundle = bundle
        self.threads = threads
        self.load()

    def load(self) -> bool:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        card = read_card(self.bundle)
        image = card["image"]
        self.classes = card["classes"]
        self.size = (image["width"], image["height"])
        self.mode = {1: "L", 3: "RGB"}[image["channels"]]
        self.net = Cnn(image["channels"], image["height"], image["width"], len(self.classes))
        self.net.load_state_dict(read_safetensors(self.bundle))
        self.net.eval()
        norm = card["normalization"]
        stats = lambda v: torch.tensor(v, dtype=torch.float64).to(torch.float32).view(-1, 1, 1)
        self.mean = stats(norm["mean"])
        self.std = stats([s if s > MIN_STD else 1.0 for s in norm["std"]])
        self.ready = True
        return self.ready

    def decode(self, instance) -> torch.Tensor:
        """One `{"b64": ...}` instance to a normalized CHW float tensor."""
        if not isinstance(instance, dict) or "b64" not in instance:
            raise kserve.errors.InvalidInput('each instance must be {"b64": "<PNG or JPEG>"}')
        img = Image.open(io.BytesIO(base64.b64decode(instance["b64"])))
        if img.size != self.size:
            img = img.resize(self.size, Image.Resampling.BILINEAR)
        pixels = torch.frombuffer(bytearray(img.convert(self.mode).tobytes()), dtype=torch.uint8)
        width, height = self.size
        chw = pixels.view(height, width, -1).permute(2, 0, 1).to(torch.float32) / 255.0
        return (chw - self.mean) / self.std

    def preprocess(self, payload: dict, headers=None) -> torch.Tensor:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not instances:
            raise kserve.errors.InvalidInput('the body must be {"instances": [...]}')
        return torch.stack([self.decode(i) for i in instances])

    def predict(self, images: torch.Tensor, headers=None) -> dict:
        with torch.no_grad():
            probabilities = self.net(images).to(torch.float64).softmax(-1)
        labels = probabilities.argmax(-1).tolist()
        return {
            "predictions": [
                {"class": self.classes[label], "label": label, "probabilities": p}
                for label, p in zip(labels, probabilities.to(torch.float32).tolist())
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], parents=[model_server.parser]
    )
    parser.add_argument("--bundle", type=Path, required=True, help="a `toucan-worker export` file")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (intra-op)")
    args, _ = parser.parse_known_args()
    model = FashionCnn(args.model_name, args.bundle, args.threads)
    server = kserve.ModelServer(enable_grpc=False, enable_latency_logging=False)
    # The ModelServer configures logging when it is made. Each request is logged at INFO by
    # uvicorn's access log and by KServe's timing middleware (on whatever
    # enable_latency_logging says).
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
