"""Third-party clients against `toucan-worker serve`, as users run them.

    python3 tests/serving/clients.py --rest http://HOST:PORT --grpc HOST:PORT --model NAME \
        --proto worker/proto/grpc_predict_v2.proto IMAGE.png ...

Sends every image through four clients and prints one JSON object with each client's class
probabilities per image (a list of lists, in the order of the images):

- "v1": KServe's Python SDK (`kserve.InferenceRESTClient`, protocol v1): a TF Serving shaped
  `:predict` with `{"b64": ...}` instances;
- "v2": the same SDK with protocol v2: an Open Inference Protocol `infer` of a BYTES tensor
  sent as binary data after the JSON header;
- "grpc": the SDK's `InferenceGRPCClient` (stubs KServe generated from the published
  `grpc_predict_v2.proto`), `ModelInfer` with the images as BYTES contents;
- "protoc": stubs generated here with grpcio-tools from the proto file given, `ModelInfer`
  with the images in `raw_input_contents` (the length-prefixed BYTES encoding).

It also checks the health and metadata calls each client offers. Any failure raises.
"""

import argparse
import asyncio
import importlib
import json
import struct
import sys
import tempfile

INPUT = "image"
OUTPUT = "probabilities"


def rest_v1(url, model, images):
    from kserve import InferenceRESTClient, RESTConfig

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        import base64

        body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
        response = await client.infer(url, body, model_name=model)
        assert await client.is_model_ready(url, model), "v1: model not ready"
        await client.close()
        return [p["probabilities"] for p in response["predictions"]]

    return asyncio.run(go())


def rest_v2(url, model, images):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        assert await client.is_server_live(url), "v2: server not live"
        assert await client.is_server_ready(url), "v2: server not ready"
        assert await client.is_model_ready(url, model), "v2: model not ready"
        # The images travel after the JSON header (the binary data extension).
        import numpy as np

        tensor = InferInput(INPUT, [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
        request = InferRequest(model_name=model, infer_inputs=[tensor])
        response = await client.infer(url, request, model_name=model)
        await client.close()
        output = next(o for o in response.outputs if o.name == OUTPUT)
        data = output.as_numpy()
        return [list(map(float, row)) for row in data]

    return asyncio.run(go())


def grpc_kserve(address, model, images):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def go():
        client = InferenceGRPCClient(address)
        assert await client.is_server_ready(), "grpc: server not ready"
        tensor = InferInput(INPUT, [len(images)], "BYTES", [i for i in images])
        request = InferRequest(model_name=model, infer_inputs=[tensor])
        response = await client.infer(request)
        await client.close()
        output = next(o for o in response.outputs if o.name == OUTPUT)
        return [list(map(float, row)) for row in output.as_numpy()]

    return asyncio.run(go())


def grpc_protoc(address, model, images, proto):
    import os

    import grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    include = os.path.dirname(os.path.abspath(proto))
    status = protoc.main(
        ["protoc", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
         os.path.basename(proto)]
    )
    assert status == 0, f"grpcio-tools failed on {proto}"
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    pb = importlib.import_module(f"{name}_pb2")
    stubs = importlib.import_module(f"{name}_pb2_grpc")
    with grpc.insecure_channel(address) as channel:
        stub = stubs.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=model))
        assert meta.name == model, meta
        raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
        request = pb.ModelInferRequest(
            model_name=model,
            inputs=[pb.ModelInferRequest.InferInputTensor(
                name=INPUT, datatype="BYTES", shape=[len(images)])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=OUTPUT)],
            raw_input_contents=[raw],
        )
        response = stub.ModelInfer(request)
    (index, tensor), = [(k, o) for k, o in enumerate(response.outputs) if o.name == OUTPUT]
    rows, classes = tensor.shape
    if response.raw_output_contents:
        flat = struct.unpack(f"<{rows * classes}f", response.raw_output_contents[index])
    else:
        flat = list(tensor.contents.fp32_contents)
    return [list(flat[r * classes:(r + 1) * classes]) for r in range(rows)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rest", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--proto", required=True)
    # The grpcio-tools stubs register the proto's file and package in protobuf's descriptor
    # pool, as KServe's own stubs do: the two cannot share a process, so that client runs in
    # a process of its own (this script again, with --only protoc).
    parser.add_argument("--only", choices=["protoc"])
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    images = [open(p, "rb").read() for p in args.images]
    if args.only == "protoc":
        print(json.dumps(grpc_protoc(args.grpc, args.model, images, args.proto)))
        return
    import subprocess

    protoc = subprocess.run(
        [sys.executable, __file__, "--only", "protoc"] + sys.argv[1:],
        capture_output=True, text=True,
    )
    if protoc.returncode != 0:
        sys.exit(f"the grpcio-tools client failed:\n{protoc.stderr}")
    # Importing kserve parses sys.argv for its own server's flags: leave it nothing to read.
    sys.argv = sys.argv[:1]
    print(json.dumps({
        "v1": rest_v1(args.rest, args.model, images),
        "v2": rest_v2(args.rest, args.model, images),
        "grpc": grpc_kserve(args.grpc, args.model, images),
        "protoc": json.loads(protoc.stdout),
    }))


if __name__ == "__main__":
    main()
