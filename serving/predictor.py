"""The KServe predictor: :class:`fusionrec.recommender.Recommender` behind v1 and v2 (open inference
protocol) endpoints, and the loader the collocated server shares with it.

At load it reads the model artifact from the storage URI (a registry folder, whose champion it serves;
one version folder; or ``/mnt/models``, which KServe's storage initializer fills in a cluster) and the
text and image encoders the artifact was trained with (for query by example). Each request is parsed,
scored by the recommender together with the requests that arrived beside it (micro-batching,
:mod:`fusionrec.api.batching`), and encoded back on the protocol it came in.

Run: ``python -m serving.predictor --model_name fusionrec --http_port 8081 [--enable_grpc true --grpc_port 8082]
[--storage_uri URI]``: REST, and with ``--enable_grpc`` the open inference protocol over gRPC
(:mod:`fusionrec.api.rpc`), the transformer's hop.
"""

from __future__ import annotations

import argparse
import logging

import kserve
from kserve import InferRequest

from fusionrec.api.batching import MicroBatcher
from fusionrec.api.schemas import parse_v1, parse_v2, result_to_dict, results_to_v2, v2_metadata, wants_monitor
from fusionrec.config import Settings
from fusionrec.errors import Unavailable

log = logging.getLogger(__name__)


def load_recommender(settings: Settings, storage_uri: str):
    """The :class:`Recommender` over the artifact at ``storage_uri`` (a registry's champion, a version folder
    or ``/mnt/models``) with the encoders it was trained with, for query by example."""
    from fusionrec.artifact import load_artifact
    from fusionrec.encoders.pipeline import build_encoders
    from fusionrec.recommender import Recommender, encoder_modalities
    from fusionrec.registry import resolve_version

    path = resolve_version(storage_uri, settings.paths.cache)
    art = load_artifact(path)
    encoders = build_encoders(settings, encoder_modalities(art))
    s = settings.serving
    rec = Recommender(
        art,
        encoders,
        search_pool=s.search_pool,
        blend=s.blend,
        bridge_weight=s.bridge_weight,
        ann_above=s.ann_above,
        ann_ef=s.ann_ef,
        ann_pool=s.ann_pool,
    )
    log.info(
        "serving %s (%s): %d items (top-K %s), %d users, modalities %s",
        path,
        art.version,
        rec.n_items,
        "approximate" if rec.topk is not None else "exact",
        len(rec.user_index),
        rec.modalities,
    )
    return rec


def batcher(settings: Settings, recommender) -> MicroBatcher:
    """The recommender's micro-batcher, sized by the serving settings."""
    s = settings.serving
    return MicroBatcher(
        recommender.run,
        max_wait_s=s.batch_wait_ms / 1000,
        max_rows=s.batch_max_rows,
        max_queue=s.batch_queue,
        queue_timeout_s=s.queue_timeout_s,
    )


class Scoring:
    """What a model server that scores has (the predictor, and the collocated server): the recommender
    over ``storage_uri`` and its micro-batcher, loaded by ``load``; ready once both are there."""

    settings: Settings
    storage_uri: str
    recommender = None  # a fusionrec.recommender.Recommender once loaded
    batcher = None  # its micro-batcher: one scoring thread, so the event loop stays free

    def load(self) -> bool:
        import torch

        torch.set_num_threads(self.settings.serving.torch_threads)
        self.recommender = load_recommender(self.settings, self.storage_uri)
        self.batcher = batcher(self.settings, self.recommender)
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready to answer: the model is loaded (every readiness route asks this)."""
        return self.ready and self.recommender is not None

    def loaded(self):
        """The recommender, or a 503 while it is not loaded yet."""
        if self.recommender is None:
            raise Unavailable("the model is not loaded yet; retry shortly")
        return self.recommender

    def v1_answer(self, results, monitor: bool) -> dict:
        """Results as a v1 answer (``monitor``: with the vectors the inference log keeps)."""
        rec = self.recommender
        return {"predictions": [result_to_dict(r, rec.terms, rec.version, monitor) for r in results]}


class FusionPredictor(Scoring, kserve.Model):
    """``kserve.Model`` around :class:`Recommender`; v1 and v2 requests, errors as 4xx with a message."""

    def __init__(self, name: str, settings: Settings, storage_uri: str | None = None) -> None:
        super().__init__(name)
        self.settings = settings
        self.storage_uri = storage_uri or settings.serving.storage_uri

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
        rec = self.loaded()
        limits = self.settings.serving
        v2 = isinstance(payload, InferRequest)
        rows = parse_v2(payload, limits) if v2 else parse_v1(payload, limits)
        monitor = wants_monitor(payload)  # the transformer's inference log asks for the vectors it keeps
        results = await self.batcher.submit(rows)
        if v2:
            return results_to_v2(results, rec.terms, rec.version, self.name, monitor)
        return self.v1_answer(results, monitor)


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server

    from fusionrec.api.http import run_model_server
    from fusionrec.config import load_settings

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--storage_uri", default=None, help="Model registry, version folder or /mnt/models.")
    args, _ = parser.parse_known_args(argv)
    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    model = FusionPredictor(args.model_name, settings, args.storage_uri)
    model.load()
    run_model_server(model, settings, args.http_port, grpc_port=args.grpc_port if args.enable_grpc else None)


if __name__ == "__main__":
    main()
