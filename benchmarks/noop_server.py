"""The serving benchmark's floor: the same two KServe model server processes as fusionrec's, with no-op
models (two empty hops). Usage: python benchmarks/noop_server.py predictor|transformer --http_port P
[--predictor_host H:P --predictor_protocol v1|v2].

On v2 the empty transformer sends what ours sends for a known user (``user_id``, ``k`` and
``exclude_seen`` tensors) and the empty predictor answers one empty ``item_id`` tensor, so the floor pays
the same protocol's packing as ours, and nothing else."""

from __future__ import annotations

import sys

import kserve
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, model_server


class NoopPredictor(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            n = payload.inputs[0].shape[0]
            out = InferOutput("item_id", [n, 0], "BYTES", [])
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)
        return {"predictions": [{"items": []} for _ in payload.get("instances", [])]}


class NoopTransformer(kserve.Model):
    """predict is KServe's own HTTP call to --predictor_host; pre- and postprocess only change the form."""

    def __init__(self, name: str, protocol: str) -> None:
        super().__init__(name)
        self.protocol = protocol
        self.ready = True

    async def preprocess(self, payload, headers=None):
        if self.protocol != "v2":
            return payload
        rows = payload["instances"]
        tensors = [
            ("user_id", "BYTES", np.array([str(r.get("user_id", "")) for r in rows], dtype=object)),
            ("k", "INT32", np.array([int(r.get("k", 10)) for r in rows], dtype=np.int32)),
            ("exclude_seen", "BOOL", np.ones(len(rows), dtype=bool)),
        ]
        inputs = [InferInput(n, list(a.shape), d, a.tolist()) for n, d, a in tensors]
        return InferRequest(model_name=self.name, infer_inputs=inputs)

    async def postprocess(self, result, headers=None, response_headers=None):
        if isinstance(result, InferResponse):
            return {"predictions": [{"items": []} for _ in range(result.outputs[0].shape[0])]}
        return result


if __name__ == "__main__":
    role = sys.argv.pop(1)
    args, _ = model_server.parser.parse_known_args()
    if role == "predictor":
        model = NoopPredictor(args.model_name)
    else:
        model = NoopTransformer(args.model_name, args.predictor_protocol)  # ModelServer reads --predictor_host
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])
