"""The serving benchmark's floor: the same two KServe model server processes as fusionrec's, with no-op
models (two empty hops). Usage: python benchmarks/noop_server.py predictor|transformer --http_port P
[--predictor_host H:P]."""

from __future__ import annotations

import sys

import kserve
from kserve import model_server


class NoopPredictor(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        return {"predictions": [{"items": []} for _ in payload.get("instances", [])]}


class NoopTransformer(kserve.Model):
    """preprocess/postprocess pass through; predict is KServe's own HTTP call to --predictor_host."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True


if __name__ == "__main__":
    role = sys.argv.pop(1)
    args, _ = model_server.parser.parse_known_args()
    model = NoopPredictor(args.model_name) if role == "predictor" else NoopTransformer(args.model_name)
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])
