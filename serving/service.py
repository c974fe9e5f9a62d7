"""The collocated model server: one KServe model server that runs the transformer's hooks and the
predictor's scoring in one process, one hop where the two-server layout has two.

``preprocess`` is the transformer's (the schema and the limits, the caller's identity and rate limit,
the PII filter off the event loop, the Feast online lookup with its timeout and circuit breaker);
``predict`` hands the parsed rows to the recommender's micro-batcher (:mod:`fusionrec.api.batching`),
with no wire form between the two halves; ``postprocess`` is the transformer's too (items, explanations,
``online_features``, the inference log). The API, the error contract and the inference log are the
transformer's. The two-server layout (``serving.layout: two_hops``) stays for scaling the two apart:
the encoders on a GPU, the lookups on CPUs.

Run: ``python -m serving.service --model_name fusionrec --http_port 8080 [--storage_uri URI] [--no_feast]``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any

from fusionrec.api.schemas import Row
from fusionrec.config import Settings
from serving.predictor import Scoring
from serving.transformer import FusionTransformer, serve_transformer

log = logging.getLogger(__name__)


class FusionService(Scoring, FusionTransformer):
    """The transformer's ``preprocess`` and ``postprocess`` around the predictor's scoring, in one process."""

    def __init__(self, name: str, settings: Settings, storage_uri: str | None = None, **transformer: Any) -> None:
        super().__init__(name, settings, **transformer)
        self.storage_uri = storage_uri or settings.serving.storage_uri
        self.ready = False  # until the model is loaded

    def _request(self, rows: list[Row], anonymous: bool = False) -> list[Row]:
        """The rows themselves: nothing is packed for a hop that is not there."""
        return [replace(r, user_id=None) for r in rows] if anonymous else rows

    async def _call_predictor(self, payload: list[Row], headers, response_headers) -> dict:
        self.loaded()
        return self.v1_answer(await self.batcher.submit(payload), self.monitor)


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--storage_uri", default=None, help="Model registry, version folder or /mnt/models.")
    parser.add_argument("--no_feast", action="store_true", help="Serve without online user features.")
    args, _ = parser.parse_known_args(argv)
    serve_transformer(
        args,
        lambda settings, **parts: FusionService(args.model_name, settings, args.storage_uri, **parts),
        collocated=True,
    )


if __name__ == "__main__":
    main()
