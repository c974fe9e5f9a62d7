"""The KServe predictor: :class:`fusionrec.recommender.Recommender` behind v1 and v2 (open inference
protocol) endpoints.

At load it reads the model artifact from the storage URI (a registry folder, whose champion it serves;
one version folder; or ``/mnt/models``, which KServe's storage initializer fills in a cluster) and the
text and image encoders the artifact was trained with (for query by example). Each request is parsed,
scored as one batch by the recommender, and encoded back on the protocol it came in.

Run: ``python -m serving.predictor --model_name fusionrec --http_port 8081 [--storage_uri URI]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve import InferRequest

from fusionrec.api.schemas import parse_v1, parse_v2, result_to_dict, results_to_v2, v2_metadata, wants_monitor
from fusionrec.config import Settings
from fusionrec.errors import Unavailable

log = logging.getLogger(__name__)


class FusionPredictor(kserve.Model):
    """``kserve.Model`` around :class:`Recommender`; v1 and v2 requests, errors as 4xx with a message."""

    def __init__(self, name: str, settings: Settings, storage_uri: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self.storage_uri = storage_uri or settings.serving.storage_uri
        self.recommender = None  # a fusionrec.recommender.Recommender once loaded
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")  # one scorer; the loop stays free

    def load(self) -> bool:
        from fusionrec.artifact import load_artifact
        from fusionrec.encoders.pipeline import build_encoders
        from fusionrec.recommender import Recommender, encoder_modalities
        from fusionrec.registry import resolve_version

        path = resolve_version(self.storage_uri, self.settings.paths.cache)
        art = load_artifact(path)
        encoders = build_encoders(self.settings, encoder_modalities(art))
        self.recommender = Recommender(
            art, encoders, search_pool=self.settings.serving.search_pool, blend=self.settings.serving.blend
        )
        log.info(
            "serving %s (%s): %d items, %d users, modalities %s",
            path,
            art.version,
            self.recommender.n_items,
            len(self.recommender.user_index),
            self.recommender.modalities,
        )
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready to answer: the model is loaded (every readiness route asks this)."""
        return self.ready and self.recommender is not None

    def _score(self, rows, queued_at: float):
        # a request that waited past the queue timeout is dropped: its caller has given up by then
        if time.monotonic() - queued_at > self.settings.serving.queue_timeout_s:
            raise Unavailable("the predictor is overloaded: the request waited too long for scoring; retry shortly")
        return self.recommender.run(rows)

    def get_input_types(self) -> list[dict]:
        rec = self.recommender
        return v2_metadata(rec.terms, rec.model.config.dim)[0] if rec else []

    def get_output_types(self) -> list[dict]:
        rec = self.recommender
        return v2_metadata(rec.terms, rec.model.config.dim)[1] if rec else []

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ):
        rec = self.recommender
        if rec is None:
            raise Unavailable("the model is not loaded yet; retry shortly")
        limits = self.settings.serving
        v2 = isinstance(payload, InferRequest)
        rows = parse_v2(payload, limits) if v2 else parse_v1(payload, limits)
        monitor = wants_monitor(payload)  # the transformer's inference log asks for the vectors it keeps
        results = await asyncio.get_running_loop().run_in_executor(self._pool, self._score, rows, time.monotonic())
        if v2:
            return results_to_v2(results, rec.terms, rec.version, self.name, monitor)
        return {"predictions": [result_to_dict(r, rec.terms, rec.version, monitor) for r in results]}


def main(argv: list[str] | None = None) -> None:
    import torch
    from kserve import model_server

    from fusionrec.api.http import run_model_server
    from fusionrec.config import load_settings

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--storage_uri", default=None, help="Model registry, version folder or /mnt/models.")
    args, _ = parser.parse_known_args(argv)
    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(settings.serving.torch_threads)
    model = FusionPredictor(args.model_name, settings, args.storage_uri)
    model.load()
    run_model_server(model, settings, args.http_port)


if __name__ == "__main__":
    main()
