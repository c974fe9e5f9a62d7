"""The KServe predictor: the fusion model behind v1 and v2 (open inference protocol) endpoints.

At load it reads the model artifact from the storage URI (a registry folder, whose champion it serves;
one version folder; or ``/mnt/models``, which KServe's storage initializer fills in a cluster), builds
the item matrix once, and loads the text and image encoders the artifact was trained with (for query
by example; their identities must match the artifact's, or the query vectors would live in another
space). Each request is scored as one batch: user vectors times the item matrix, exclusions masked,
top-K.

Run: ``python -m fusionrec.serving.predictor --model_name fusionrec --http_port 8081 [--storage_uri URI]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusionrec.config import Settings
from fusionrec.errors import BadRequest, ConfigError, FusionRecError, NotFound
from fusionrec.registry import Artifact, champion, load_artifact
from fusionrec.serving.schemas import (Result, Row, parse_v1, parse_v2, result_to_dict, results_to_v2,
                                       v2_metadata)

log = logging.getLogger(__name__)


def resolve_model_dir(uri: str, cache_dir: str | Path) -> Path:
    """The version folder a storage URI names: a version folder itself, or a registry's champion.

    Raises:
        ConfigError: nothing servable there (no artifact, no champion).
    """
    from fusionrec.encoders.storage import resolve_checkpoint

    path = resolve_checkpoint(uri, cache_dir)
    if (path / "model.safetensors").exists():
        return path
    best = champion(path)
    if best is not None and best.exists():
        return best
    raise ConfigError(f"{uri}: neither a model version folder (model.safetensors) nor a registry with a champion "
                      "(champion.json); train one with 'fusionrec train'")


class Recommender:
    """The serving logic over one loaded artifact, independent of KServe (batched, thread-safe for reads)."""

    def __init__(self, artifact: Artifact, encoders: dict[str, Any] | None = None) -> None:
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.version = artifact.version
        self.modalities = list(self.model.modality_names)
        self.encoders = encoders or {}
        for m, enc in self.encoders.items():
            want = artifact.encoders.get(m, {}).get("identity")
            if want != enc.identity:
                raise ConfigError(f"the {m} encoder here is {enc.identity!r} but the model was trained on {want!r}; "
                                  "configure the same checkpoint (encoders.{m}.checkpoint)")
        with torch.inference_mode():
            out = self.model.items()
        self.item_vectors = out.vectors  # [n, d] unit vectors, built once
        self.item_bias = out.bias
        self.item_shares = out.modality_weights.numpy()
        items = artifact.items.sort_values("item_idx")
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.item_index = {i: n for n, i in enumerate(self.item_ids)}
        self.titles = (items["title"].fillna("").astype(str).to_numpy() if "title" in items
                       else np.full(len(items), "", dtype=object))
        self.images = (items["image"].fillna("").astype(str).map(lambda p: Path(p).name if p else "").to_numpy()
                       if "image" in items else np.full(len(items), "", dtype=object))
        self.user_index = dict(zip(artifact.users["user_id"].astype(str), artifact.users["user_idx"].astype(int)))
        self.popularity = torch.from_numpy(artifact.popularity.astype(np.float32))
        self.n_items = len(self.item_ids)
        self.history_length = artifact.history.shape[1]

    # -- helpers ---------------------------------------------------------------------------------

    def _items(self, ids: list[str], what: str) -> list[int]:
        unknown = [i for i in ids if i not in self.item_index]
        if unknown:
            raise NotFound(f"unknown item ids in {what}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        return [self.item_index[i] for i in ids]

    def _top(self, scores: torch.Tensor, allowed: torch.Tensor, k: int, shares: np.ndarray | None = None) -> Result:
        scores = scores.masked_fill(~allowed, float("-inf"))
        k = min(k, int(allowed.sum()))
        top = torch.topk(scores, k) if k else None
        idx = top.indices.numpy() if top is not None else np.zeros(0, dtype=np.int64)
        return Result(self.item_ids[idx].tolist(), self.titles[idx].tolist(), self.images[idx].tolist(),
                      top.values.numpy() if top is not None else np.zeros(0, dtype=np.float32),
                      (self.item_shares if shares is None else shares)[idx])

    def _allowed(self, row: Row, excluded: list[int]) -> torch.Tensor:
        if row.candidates is not None:
            allowed = torch.zeros(self.n_items, dtype=torch.bool)
            allowed[self._items(row.candidates, "candidates")] = True
        else:
            allowed = torch.ones(self.n_items, dtype=torch.bool)
        if excluded:
            allowed[excluded] = False
        return allowed

    # -- the two requests ------------------------------------------------------------------------

    def run(self, rows: list[Row]) -> list[Result]:
        """Answer a batch of rows (recommendations and queries may be mixed), in order."""
        out: list[Result | None] = [None] * len(rows)
        rec = [i for i, r in enumerate(rows) if r.kind == "recommend"]
        qry = [i for i, r in enumerate(rows) if r.kind == "query"]
        if rec:
            for i, res in zip(rec, self.recommend([rows[i] for i in rec])):
                out[i] = res
        if qry:
            for i, res in zip(qry, self.query([rows[i] for i in qry])):
                out[i] = res
        return out  # type: ignore[return-value]

    def recommend(self, rows: list[Row]) -> list[Result]:
        """Top-K for users: known users by ID and history, cold users by the given history, anonymous
        requests (no user, no history) by popularity with ``fallback`` set."""
        H = self.history_length
        users = torch.full((len(rows),), -1, dtype=torch.long)
        hist = torch.zeros((len(rows), H), dtype=torch.long)
        mask = torch.zeros((len(rows), H), dtype=torch.bool)
        excluded: list[list[int]] = []
        for n, row in enumerate(rows):
            asked = self._items(row.history, "history")
            # the feature store's history, minus items the model does not know (added since it was trained)
            recent = [self.item_index[i] for i in row.recent if i in self.item_index and self.item_index[i] not in asked]
            given = recent + asked
            u = self.user_index.get(row.user_id) if row.user_id is not None else None
            if row.user_id is not None and u is None and not given:
                raise NotFound(f"unknown user {row.user_id!r}: the model has no such user; send the user's history "
                               "('history': [item ids]) to be served as a new user, or omit user_id for popular items")
            items = given
            if u is not None:
                users[n] = u
                stored = self.artifact.history[u][self.artifact.history_mask[u]].tolist()
                known = set(stored)
                items = stored + [i for i in given if i not in known]
            items = items[-H:]
            hist[n, : len(items)] = torch.tensor(items, dtype=torch.long)
            mask[n, : len(items)] = True
            ex = self._items(row.exclude, "exclude")
            if row.exclude_seen:
                ex += given + (self.artifact.seen(u).tolist() if u is not None else [])
            excluded.append(ex)
        with torch.inference_mode():
            uv = self.model.users(users, hist, mask, self.item_vectors)
            scores = self.model.logits(uv, self.item_vectors, self.item_bias)
        results = []
        for n, row in enumerate(rows):
            fallback = bool(users[n] < 0 and not mask[n].any())
            res = self._top(self.popularity.clone() if fallback else scores[n], self._allowed(row, excluded[n]), row.k)
            res.fallback, res.cold = fallback, bool(users[n] < 0 and mask[n].any())
            results.append(res)
        return results

    def embed(self, rows: list[Row]) -> tuple[torch.Tensor, np.ndarray]:
        """Vectors [B, d] (and modality shares [B, M]) for query rows' text and/or image, in the item space."""
        content: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m, field in (("text", "text"), ("image", "image")):
            asked = [i for i, r in enumerate(rows) if getattr(r, field) is not None]
            if not asked:
                continue
            if m not in self.modalities or m not in self.encoders:
                raise BadRequest(f"this model has no {m} encoder; query with {sorted(set(self.encoders) & set(self.modalities))}")
            enc = self.encoders[m].encode([getattr(rows[i], field) for i in asked])
            bad = [(i, enc.reasons[j]) for j, i in enumerate(asked) if not enc.mask[j]]
            if bad:
                raise BadRequest(f"row {bad[0][0]}: the {m} cannot be used: {bad[0][1]}")
            values = torch.zeros(len(rows), enc.values.shape[1])
            present = torch.zeros(len(rows), dtype=torch.bool)
            values[asked] = torch.from_numpy(np.asarray(enc.values, dtype=np.float32))
            present[asked] = True
            content[m] = (values, present)
        with torch.inference_mode():
            out = self.model.items(content=content)
        return out.vectors, out.modality_weights.numpy()

    def query(self, rows: list[Row]) -> list[Result]:
        """Items most like each query (cosine in the item space), with the query's embedding."""
        vectors, shares = self.embed(rows)
        with torch.inference_mode():
            scores = vectors @ self.item_vectors.T
        results = []
        for n, row in enumerate(rows):
            res = self._top(scores[n], self._allowed(row, self._items(row.exclude, "exclude")), row.k)
            res.embedding = vectors[n].numpy()
            results.append(res)
        return results


def _predictor_class():
    import kserve
    from kserve import InferRequest

    class FusionPredictor(kserve.Model):
        """``kserve.Model`` around :class:`Recommender`; v1 and v2 requests, errors as 4xx with a message."""

        def __init__(self, name: str, settings: Settings, storage_uri: str | None = None) -> None:
            super().__init__(name)
            self.settings = settings
            self.storage_uri = storage_uri or settings.serving.storage_uri
            self.recommender: Recommender | None = None
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")  # one scorer; the loop stays free

        def load(self) -> bool:
            from fusionrec.encoders.pipeline import build_encoders

            path = resolve_model_dir(self.storage_uri, self.settings.paths.cache)
            art = load_artifact(path)
            encoders = build_encoders(self.settings, set(art.encoders) & {"text", "image"})
            self.recommender = Recommender(art, encoders)
            log.info("serving %s (%s): %d items, %d users, modalities %s", path, art.version,
                     self.recommender.n_items, len(self.recommender.user_index), self.recommender.modalities)
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict]:
            rec = self.recommender
            return v2_metadata(rec.modalities, rec.model.config.dim)[0] if rec else []

        def get_output_types(self) -> list[dict]:
            rec = self.recommender
            return v2_metadata(rec.modalities, rec.model.config.dim)[1] if rec else []

        async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
            rec = self.recommender
            limits = self.settings.serving
            v2 = isinstance(payload, InferRequest)
            rows = parse_v2(payload, limits) if v2 else parse_v1(payload, limits)
            results = await asyncio.get_running_loop().run_in_executor(self._pool, rec.run, rows)
            if v2:
                return results_to_v2(results, rec.modalities, rec.version, self.name)
            return {"predictions": [result_to_dict(r, rec.modalities, rec.version) for r in results]}

    return FusionPredictor


def install_error_handlers() -> None:
    """Answer every :class:`FusionRecError` with its status and ``{"error": message}`` (KServe's app)."""
    from fastapi.responses import JSONResponse
    from kserve.model_server import app

    async def handler(_, exc: FusionRecError):
        return JSONResponse(status_code=exc.http_status, content={"error": str(exc)})

    app.add_exception_handler(FusionRecError, handler)


def main(argv: list[str] | None = None) -> None:
    import kserve
    from kserve import model_server

    from fusionrec.config import load_settings

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--storage_uri", default=None, help="Model registry, version folder or /mnt/models.")
    args, _ = parser.parse_known_args(argv)
    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(settings.serving.torch_threads)
    model = _predictor_class()(args.model_name, settings, args.storage_uri)
    model.load()
    install_error_handlers()
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
