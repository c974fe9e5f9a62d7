"""Usage: python tests/mutants.py [--only NAME ...] [--ci] [--all] [--list] [--keep] [--tests-from GIT_REV]

Shows that the suite can fail: breaks the code on purpose, one way at a time, on a scratch copy of the
repository, and runs the tests that name the broken behaviour. Each must fail. Before a mutant counts as
caught, its tests are run on the unmutated copy (once per distinct selection): a selection that fails or
selects nothing there is reported as a red BASELINE, never as a catch, so a flaky or broken test cannot
pass for a caught mutant. Prints one line per mutant and exits 1 when any mutant survives or any
baseline is red.

``--all`` also writes the whole run as one table (``build/mutants/summary.md`` and ``results.json``): the
commit, each mutant's baseline, verdict and seconds, and the count caught. ``--ci`` runs the short subset
:data:`CI_SUBSET` (the mutants whose tests took least time in a full run), which ``.ci/run`` runs on every
submission. The working tree is never touched: the copy lives in a temporary folder and shadows the
installed package through PYTHONPATH, which the model servers the serving tests start inherit. Not
collected by pytest (the name does not start with ``test_``). ``--tests-from REV`` runs the same
breakages against the ``tests/`` folder of an older commit, every test in the named files (the ``-k``
selections name today's tests), to compare two suites; its baselines are that suite's on today's code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL, PIPELINE = "tests/unit/test_model.py", "tests/integration/test_training_pipeline.py"
FEATURES, SERVING = "tests/integration/test_features.py", "tests/integration/test_serving.py"
MONITORING = "tests/unit/test_monitoring.py"
BUNDLE, MANIFESTS = "tests/integration/test_bundle.py", "tests/unit/test_manifests.py"
ACCESS, GUARD, REGISTRY = "tests/unit/test_access.py", "tests/unit/test_http_guard.py", "tests/unit/test_registry.py"
SINK, SECURITY, CONFIG = "tests/integration/test_sink.py", "tests/unit/test_security.py", "tests/unit/test_config.py"
REFERENCE = "tests/integration/test_drift_reference.py"
REQUEST = "tests/unit/test_train_request.py"
BATCHING = "tests/unit/test_batching.py"


@dataclass(frozen=True)
class Mutant:
    """One deliberate breakage: replace ``old`` by ``new`` in ``file``; ``tests`` must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant(
        "AUC computed the wrong way round",
        "src/fusionrec/evaluation.py",
        "ranks[y == 1].sum()",
        "ranks[y == 0].sum()",
        (MODEL, "-k", "auc"),
    ),
    Mutant(
        "AUC breaks ties by input order",
        "src/fusionrec/evaluation.py",
        'method="average"',
        'method="ordinal"',
        (MODEL, "-k", "auc"),
    ),
    Mutant(
        "resume does not restore the weights",
        "src/fusionrec/train/loop.py",
        '        model.load_state_dict(state["model"])\n',
        "",
        (PIPELINE, "-k", "resumes"),
    ),
    Mutant(
        "resume does not restore the optimiser",
        "src/fusionrec/train/loop.py",
        '        opt.load_state_dict(state["optimizer"])\n',
        "",
        (PIPELINE, "-k", "resumes"),
    ),
    Mutant(
        "the gate ignores its margin",
        "src/fusionrec/registry.py",
        "better = value >= old_value * (1 + margin)",
        "better = value >= old_value",
        (PIPELINE, "-k", "gate"),
    ),
    Mutant(
        "DDP ranks each train on every batch",
        "src/fusionrec/train/loop.py",
        "mine = batches[rank::world]",
        "mine = batches",
        (PIPELINE, "-k", "ddp"),
    ),
    Mutant(
        "DDP never wraps the model (no gradient all-reduce)",
        "src/fusionrec/train/loop.py",
        "        net = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)",
        "        pass",
        (PIPELINE, "-k", "ddp"),
    ),
    Mutant(
        "a training row's history includes its own item",
        "src/fusionrec/features/tables.py",
        '"event_timestamp": pa.array(_stamp(ts, extra_us=1)),',
        '"event_timestamp": pa.array(_stamp(ts, extra_us=0)),',
        (FEATURES, "-k", "never_sees"),
    ),
    Mutant(
        "training frames fold duplicated entity rows",
        "src/fusionrec/features/store.py",
        '    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)\n',
        '    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)\n'
        "    rows = rows.drop_duplicates()\n",
        (FEATURES, "-k", "never_sees"),
    ),
    Mutant(
        "the given split swaps valid and test",
        "src/fusionrec/data/splits.py",
        'for k in (0, 1, 2)]',
        'for k in (0, 2, 1)]',
        (MODEL, "-k", "given"),
    ),
    Mutant(
        "coverage of a cold split counts the whole catalogue",
        "src/fusionrec/evaluation.py",
        "pool = int(allowed.sum()) if allowed is not None else n_items",
        "pool = n_items",
        (MODEL, "-k", "coverage"),
    ),
    Mutant(
        "ratings out of range pass validation",
        "src/fusionrec/validation/checks.py",
        '{"column": "__rating", "min_value": lo, "max_value": hi}',
        '{"column": "__rating", "min_value": lo, "max_value": 1e9}',
        ("tests/unit/test_validation.py", "-k", "planted_for_it"),
    ),
    Mutant(
        "the fusion gate loses its tanh",
        "src/fusionrec/model/modeling.py",
        "logits = self.score(torch.tanh(self.proj(h))).squeeze(-1)",
        "logits = self.score(self.proj(h)).squeeze(-1)",
        (MODEL, "-k", "missing_modality"),
    ),
    Mutant(
        "concat fusion mixes in a missing modality",
        "src/fusionrec/model/modeling.py",
        "        h = h * mask.unsqueeze(-1)\n",
        "",
        (MODEL, "-k", "concat"),
    ),
    Mutant(
        "an encoder's identity ignores its weights",
        "src/fusionrec/encoders/text.py",
        'f"text/{self.model.config.model_type}/{hash_files(weights)}/max',
        'f"text/{self.model.config.model_type}/{0}/max',
        ("tests/unit/test_encoders.py", "-k", "changed_weights"),
    ),
    Mutant(
        "an explanation leaves out the item bias",
        "src/fusionrec/model/modeling.py",
        "(temperature * norm.unsqueeze(-1)) + bias",
        "(temperature * norm.unsqueeze(-1))",
        (MODEL, "-k", "score_terms"),
    ),
    Mutant(
        "served score terms swapped between image and text",
        "src/fusionrec/recommender.py",
        "self.item_parts, self.item_part_bias = parts.parts, parts.bias",
        "self.item_parts, self.item_part_bias = parts.parts[:, [1, 0, 2, 3]], parts.bias[:, [1, 0, 2, 3]]",
        (SERVING, "-k", "known_user_gets"),
    ),
    Mutant(
        "query by example ranks by the first modality only",
        "src/fusionrec/search.py",
        "                terms[:, col] = self._cosines(m, items, q[m]) * share[m]",
        "                terms[:, col] = self._cosines(m, items, q[m]) * share[m] * (col == 0)",
        (SERVING, "-k", "more_like"),
    ),
    Mutant(
        "the feature store lookup has no timeout",
        "serving/transformer.py",
        "history = await breaker.call(lambda: lookups.get(ids), timeout_s)",
        "history = await breaker.call(lambda: lookups.get(ids), 60)",
        (SERVING, "-k", "survives"),
    ),
    Mutant(
        "the exclude field is ignored",
        "src/fusionrec/recommender.py",
        '            ex = self._items(row.exclude, "exclude")',
        '            ex = []; self._items(row.exclude, "exclude")',
        (SERVING, "-k", "exclude_removes"),
    ),
    Mutant(
        "the transformer skips the PII filter",
        "serving/transformer.py",
        "                r.text = self.pii.redact(r.text)",
        "                pass",
        ("tests/unit/test_serving_schemas.py", "-k", "redacts"),
    ),
    Mutant(
        "the transformer waits 30 s for a hung predictor",
        "src/fusionrec/platform/local.py",
        '"--predictor_request_timeout_seconds",\n        str(settings.serving.predictor_timeout_s),',
        '"--predictor_request_timeout_seconds",\n        "30",',
        (SERVING, "-k", "predictor_down"),
    ),
    Mutant(
        "the transformer speaks v2 whatever it is told",
        "src/fusionrec/platform/local.py",
        '"--predictor_protocol",\n        protocol,',
        '"--predictor_protocol",\n        "v2",',
        (SERVING, "-k", "detach"),
    ),
    Mutant(
        "the pipeline's gate promotes every candidate",
        "components/training.py",
        "    return d.promoted\n",
        "    return True\n",
        ("tests/e2e/test_pipeline.py",),
    ),
    Mutant(
        "the trainer ignores Feast and reads the embeddings folder",
        "src/fusionrec/train/run.py",
        "    if features_dir is not None:\n",
        "    if False:\n",
        ("tests/integration/test_workflow.py", "-k", "come_from_feast"),
    ),
    Mutant(
        "items never seen in training stay every batch's negatives",
        "src/fusionrec/model/modeling.py",
        "            if self.item_seen.any():\n",
        "            if False:\n",
        (MODEL, "-k", "never_seen"),
    ),
    Mutant(
        "the sampled softmax without its logQ correction",
        "src/fusionrec/model/modeling.py",
        "bias[cand]) - log_q",
        "bias[cand])",
        (MODEL, "-k", "logq"),
    ),
    Mutant(
        "the sampler's expected counts leave out the in-batch draw",
        "src/fusionrec/train/loop.py",
        "expected = len(positives) * self.share[candidates] + ",
        "expected = 0 * self.share[candidates] + ",
        (MODEL, "-k", "sampler"),
    ),
    Mutant(
        "the item-item term ignores its weight",
        "src/fusionrec/model/modeling.py",
        "        return out * self.ii_weight\n",
        "        return out\n",
        ("tests/unit/test_itemitem.py",),
    ),
    Mutant(
        "the served score leaves out the item-item and content terms",
        "src/fusionrec/recommender.py",
        "self.model.logits(uv, self.item_vectors, self.item_bias) + by_history.sum(-1)",
        "self.model.logits(uv, self.item_vectors, self.item_bias)",
        (SERVING, "-k", "explained_and_versioned"),
    ),
    Mutant(
        "the content term ignores its weight",
        "src/fusionrec/model/modeling.py",
        "out += F.normalize(pooled, dim=-1) @ c.T * w",
        "out += F.normalize(pooled, dim=-1) @ c.T",
        ("tests/unit/test_itemitem.py", "-k", "content_term_is_the_cosine"),
    ),
    Mutant(
        "the taste term without its smoothing",
        "src/fusionrec/model/modeling.py",
        "torch.log((counts + 1.0) / (m.sum(1, keepdim=True) + K))",
        "torch.log((counts + 1e-6) / (m.sum(1, keepdim=True) + 1e-6 * K))",
        ("tests/unit/test_itemitem.py", "-k", "taste_term_is_the_log_share"),
    ),
    Mutant(
        "the top-K index's request without the taste shares",
        "src/fusionrec/topk.py",
        "            q.append(row.taste * self.T * float(self.model.tc_weight))",
        "            q.append(row.taste * 0.0)",
        ("tests/integration/test_topk.py", "-k", "taste"),
    ),
    Mutant(
        "the taste clusters left at the grid's first count, not the validation's",
        "src/fusionrec/itemitem.py",
        "        if tried[w] > best[0]:",
        "        if best[1] == 0:",
        ("tests/unit/test_itemitem.py", "-k", "taste_term_is_chosen"),
    ),
    Mutant(
        "the content weight taken from the grid's start, not the validation",
        "src/fusionrec/itemitem.py",
        "weight, wn, power = max(combined, key=combined.get)",
        "weight, wn, power = (CONTENT_WEIGHTS[1], *max(combined, key=combined.get)[1:])",
        ("tests/unit/test_itemitem.py", "-k", "content_weight_is_chosen"),
    ),
    Mutant(
        "the item-item ridge left at the first in the grid",
        "src/fusionrec/itemitem.py",
        "        if ndcg > best[0] or best[3] is None:",
        "        if best[3] is None:",
        ("tests/unit/test_itemitem.py", "-k", "together"),
    ),
    Mutant(
        "the item-item weight taken from the grid's start, not the validation",
        "src/fusionrec/itemitem.py",
        "w = max(combined, key=combined.get)",
        "w = WEIGHTS[1]",
        ("tests/unit/test_itemitem.py", "-k", "together"),
    ),
    Mutant(
        "ids with a leading zero read as integers",
        "src/fusionrec/data/dataset.py",
        'as_str.str.fullmatch(r"0|-?[1-9][0-9]{0,17}")',
        'as_str.str.fullmatch(r"-?[0-9]{1,18}")',
        ("tests/unit/test_contract_and_readers.py", "-k", "as_the_data_wrote_them"),
    ),
    Mutant(
        "the sparse item-item form leaves out the Gram matrix's top eigenpairs",
        "src/fusionrec/itemitem.py",
        "c = (1.0 / (s + lam) - 1.0 / lam + s / lam**2).astype(np.float32)",
        "c = np.zeros_like(s, dtype=np.float32)",
        ("tests/unit/test_itemitem.py", "-k", "sparse_form"),
    ),
    Mutant(
        "the sparse item-item form keeps the first-order expansion where the remainder reaches the ridge",
        "src/fusionrec/itemitem.py",
        'return "jacobi" if self.eigenvalues[-1] > self.JACOBI * lam else "first-order"',
        'return "first-order"',
        ("tests/unit/test_itemitem.py", "-k", "diagonal"),
    ),
    Mutant(
        "the most bought items added to the sparse item-item rows only where they co-occur",
        "src/fusionrec/itemitem.py",
        "(with_top.ravel()[own] + 1.0, (rows[own], cols[own]))",
        "(with_top.ravel()[own], (rows[own], cols[own]))",
        ("tests/unit/test_itemitem.py", "-k", "popular"),
    ),
    Mutant(
        "the weight average without its bias correction (pulled towards zero early in training)",
        "src/fusionrec/train/loop.py",
        "live, scale = {}, 1.0 / (1.0 - self.decay**self.steps) if self.steps else 0.0",
        "live, scale = {}, 1.0",
        (MODEL, "-k", "averaged_weights"),
    ),
    Mutant(
        "a resumed run restarting the weight average instead of restoring it",
        "src/fusionrec/train/loop.py",
        'average.steps, average.sums = state["average"]["steps"], state["average"]["sums"]',
        "pass",
        (PIPELINE, "-k", "resumes"),
    ),
    Mutant(
        "the diagonal-expanded item-item form not projected off the eigenvectors",
        "src/fusionrec/itemitem.py",
        'p_ij += np.einsum("nr,nr->n", V[ia], U[ja]) - np.einsum("nr,nr->n", Z[ia], V[ja])',
        'p_ij += np.einsum("nr,nr->n", V[ia] * (1.0 / (s + lam) - 1.0 / lam).astype(np.float32), V[ja])',
        ("tests/unit/test_itemitem.py", "-k", "diagonal"),
    ),
    Mutant(
        "the content neighbourhood counts each item as its own nearest neighbour",
        "src/fusionrec/itemitem.py",
        'sims[rows, rows + s] = float("-inf")  # never its own neighbour',
        "pass",
        ("tests/unit/test_itemitem.py", "-k", "content_neighbour"),
    ),
    Mutant(
        "the content term leaves out the neighbourhood it chose",
        "src/fusionrec/model/modeling.py",
        "out += _neighbour_sum(h, m, self.cn_index, self.cn_value, n) * wn",
        "pass",
        ("tests/unit/test_itemitem.py", "-k", "content_neighbour"),
    ),
    Mutant(
        "the co-occurrence slices leave each item paired with itself",
        "src/fusionrec/itemitem.py",
        "other = C.col != start + C.row",
        "other = C.col != C.row",
        ("tests/unit/test_itemitem.py", "-k", "slice_budget"),
    ),
    Mutant(
        "the item-item term sums only the first slice of a long history",
        "src/fusionrec/model/modeling.py",
        "for s in range(0, h.shape[1], step):",
        "for s in range(0, min(step, h.shape[1]), step):",
        ("tests/unit/test_itemitem.py", "-k", "long_histories"),
    ),
    Mutant(
        "the item-item term's dense product counts a repeated history item once",
        "src/fusionrec/model/modeling.py",
        "torch.zeros(B, n, device=h.device).scatter_add_(1, h, history_mask.to(dense.dtype))",
        "torch.zeros(B, n, device=h.device).scatter_(1, h, history_mask.to(dense.dtype))",
        ("tests/unit/test_itemitem.py", "-k", "long_histories"),
    ),
    Mutant(
        "long epochs validate only at their end",
        "src/fusionrec/train/loop.py",
        "checks = check_steps(len(mine), size * world, cfg.valid_every)",
        "checks = {len(mine) - 1}",
        (MODEL, "-k", "long_epochs"),
    ),
    Mutant(
        "the sampled softmax keeps its large batches on a small training set",
        "src/fusionrec/train/loop.py",
        "return max(cfg.batch_size, min(cfg.sampled_batch_size, n_rows // cfg.min_steps_per_epoch))",
        "return cfg.sampled_batch_size",
        (MODEL, "-k", "sampled_batches"),
    ),
    Mutant(
        "counts are standardised without log1p",
        "src/fusionrec/encoders/tabular.py",
        "x = np.log1p(np.maximum(x, 0.0)) if c.log else x",
        "x = x",
        ("tests/unit/test_tabular.py",),
    ),
    # monitoring (issue 13)
    Mutant(
        "the user id is logged as it came, not pseudonymised",
        "src/fusionrec/monitoring/log.py",
        "return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]",
        "return str(user_id)",
        (MONITORING, "-k", "pseudonymised or records"),
    ),
    Mutant(
        "a corrupt log file stops the read",
        "src/fusionrec/monitoring/log.py",
        "            except Exception as e:  # truncated, corrupt, another schema",
        "            except KeyError as e:",
        (MONITORING, "-k", "corrupt"),
    ),
    Mutant(
        "the debounce is ignored",
        "src/fusionrec/monitoring/policy.py",
        "    if last is not None and now - datetime.fromisoformat(last.at) < timedelta(hours=settings.cooldown_h):",
        "    if False:",
        (MONITORING, "-k", "policy"),
    ),
    Mutant(
        "a signal with too few rows is judged anyway",
        "src/fusionrec/monitoring/drift.py",
        "        if min(len(cv), len(rv)) < settings.min_records or cv.shape[1] != rv.shape[1]:",
        "        if min(len(cv), len(rv)) < 2 or cv.shape[1] != rv.shape[1]:",
        (MONITORING, "-k", "too_few_rows"),
    ),
    Mutant(
        "feedback counts the items the model was trained with",
        "src/fusionrec/monitoring/quality.py",
        "        if i not in seen.get(u, set())\n",
        "",
        (FEATURES, "-k", "feedback"),
    ),
    Mutant(
        "the CRD check lets unknown fields through",
        "src/fusionrec/platform/bundle.py",
        '        out["additionalProperties"] = False\n',
        "        pass\n",
        (BUNDLE, "-k", "crd_check"),
    ),
    Mutant(
        "prod renders with placeholder digests",
        "src/fusionrec/platform/bundle.py",
        '    if overlay == "prod":\n',
        "    if False:\n",
        (BUNDLE, "-k", "refuses_prod"),
    ),
    Mutant(
        "a rollout puts the template's spec over the overlay's",
        "src/fusionrec/platform/deploy.py",
        '"spec": copy.deepcopy(live["spec"]),',
        '"spec": copy.deepcopy(load_manifest()["spec"]),',
        (MANIFESTS, "-k", "rollout"),
    ),
    Mutant(
        "the sink runs as root",
        "manifests/base/monitoring/sink.yaml",
        "securityContext: {runAsNonRoot: true, runAsUser: 10001",
        "securityContext: {runAsNonRoot: false, runAsUser: 0",
        (BUNDLE, "-k", "non_root or policy_scan_passes"),
    ),
    Mutant(
        "the deploy step may patch every InferenceService",
        "manifests/base/security/rbac.yaml",
        "    resourceNames: [fusionrec]\n",
        "",
        (BUNDLE, "-k", "patch_only"),
    ),
    # issue 22: the serving surface, callers, the registry, the sink, the bundle
    Mutant(
        "every KServe route is open again",
        "src/fusionrec/api/http.py",
        "        if not any(m == probe and rx.match(path) for m, rx in self.allowed):",
        "        if False:",
        (GUARD, "-k", "routes_outside"),
    ),
    Mutant(
        "readiness says ready before the model is loaded",
        "serving/predictor.py",
        "        return self.ready and self.recommender is not None",
        "        return self.ready",
        (GUARD, "-k", "not_ready_until"),
    ),
    Mutant(
        "the body limit trusts the client's Content-Length only",
        "src/fusionrec/api/http.py",
        "                if received > limit:",
        "                if False:",
        (GUARD, "-k", "body_over"),
    ),
    Mutant(
        "no admission limit",
        "src/fusionrec/api/http.py",
        "        if counted and self.inflight >= self.max_inflight:",
        "        if False:",
        (GUARD, "-k", "admission"),
    ),
    Mutant(
        "the predictor scores work whose caller has gone",
        "src/fusionrec/api/batching.py",
        "if now - item.queued_at > self.queue_timeout_s:",
        "if False:",
        (GUARD, "-k", "queue_timeout"),
    ),
    Mutant(
        "an end user may ask for anyone",
        "src/fusionrec/api/access.py",
        "        if uid is not None and not caller.any_user and uid != caller.user_id:",
        "        if False:",
        (ACCESS, "-k", "themselves"),
    ),
    Mutant(
        "the seen-items oracle is open again",
        "src/fusionrec/api/access.py",
        "        if uid is not None and row.exclude_seen and row.candidates is not None"
        " and not caller.may_read_history(uid):",
        "        if False:",
        (ACCESS, "-k", "exclude_seen"),
    ),
    Mutant(
        "the XFCC header's first element is believed",
        "src/fusionrec/api/access.py",
        "    if uris[-1] in gateways:\n        return uris[-2] if len(uris) >= 2 else None\n    return uris[-1]",
        "    return uris[0]",
        (ACCESS, "-k", "mesh"),
    ),
    Mutant(
        "no rate limit",
        "src/fusionrec/api/access.py",
        "            if tokens < 1.0:",
        "            if False:",
        (ACCESS, "-k", "rate_limit"),
    ),
    Mutant(
        "a decompression bomb is decoded",
        "src/fusionrec/api/schemas.py",
        "    if w * h > limits.max_image_pixels:",
        "    if False:",
        (SERVING, "-k", "hostile_input"),
    ),
    Mutant(
        "registration without the lock",
        "src/fusionrec/registry.py",
        "from fusionrec.io import atomic_write_text, file_lock, new_dir",
        "from contextlib import nullcontext\nfrom fusionrec.io import atomic_write_text, new_dir\n"
        "file_lock = lambda path: nullcontext()",
        (REGISTRY, "-k", "concurrent or waits_for_the_registry_lock"),
    ),
    Mutant(
        "promotion without the compare-and-swap",
        "src/fusionrec/registry.py",
        "    if (current.name if current else None) != expected:",
        "    if False:",
        (REGISTRY, "-k", "compare_and_swap"),
    ),
    Mutant(
        "checksums are not verified at load",
        "src/fusionrec/artifact.py",
        "    changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))",
        "    changed = []",
        (REGISTRY, "-k", "changed_artifact"),
    ),
    Mutant(
        "the register step registers a candidate that no longer wins",
        "src/fusionrec/registry.py",
        "        if only_if_better and not decision.promoted:",
        "        if False:",
        (REGISTRY, "-k", "no_longer_wins"),
    ),
    Mutant(
        "a stale Ready promotes the canary",
        "src/fusionrec/platform/deploy.py",
        '        if int(status.get("observedGeneration") or 0) >= generation and ready:',
        "        if ready:",
        (MANIFESTS, "-k", "failing_canary"),
    ),
    Mutant(
        "a rolled-back canary keeps the champion",
        "src/fusionrec/platform/deploy.py",
        "            restored = demote(registry, version)",
        "            restored = version",
        (MANIFESTS, "-k", "gives_back"),
    ),
    Mutant(
        "the sink trusts a record's model_version",
        "src/fusionrec/monitoring/log.py",
        'is_version(r.get("model_version"))\n        and isinstance(r.get("items"), list)',
        'True\n        and isinstance(r.get("items"), list)',
        (SINK, "-k", "dropped_alone"),
    ),
    Mutant(
        "a short pseudonymisation key is accepted",
        "src/fusionrec/monitoring/log.py",
        "    if len(key) < MIN_KEY_BYTES:",
        "    if False:",
        (MONITORING, "-k", "short_empty"),
    ),
    Mutant(
        "the first traffic becomes the callers' reference again",
        "src/fusionrec/monitoring/loop.py",
        '    callers, why = pinned_callers(folder / "reference", query_identities(art), version)\n',
        '    callers = read_window(folder / "logs").frame\n'
        '    callers, why = callers[callers["model_version"] == version].sort_values("time").head(600), "first"\n',
        (REFERENCE, "-k", "first_traffic"),
    ),
    Mutant(
        "requests with nothing to compare with are compared",
        "src/fusionrec/monitoring/loop.py",
        "        current = frame[covered]",
        "        current = frame",
        (REFERENCE, "-k", "first_traffic"),
    ),
    Mutant(
        "the callers' window is drawn in its own mix, not the window's",
        "src/fusionrec/monitoring/reference.py",
        "            parts.append(matched(pinned, brought, seed, times))",
        "            parts.append(pinned)",
        (REFERENCE, "-k", "shapes"),
    ),
    # issue 23: one training spec, whole, from every entry point
    Mutant(
        "the TrainJob drops the spec's softmax",
        "src/fusionrec/platform/trainjob.py",
        '"--spec",\n        s.model_dump_json(),',
        '"--spec",\n        s.model_dump_json(exclude={"softmax"}),',
        (REQUEST, "-k", "trainjob"),
    ),
    Mutant(
        "a flag given on the command line is ignored",
        "src/fusionrec/train/request.py",
        "{k: v for k, v in flags.items() if v is not None}",
        "{}",
        (REQUEST, "-k", "flags_over"),
    ),
    Mutant(
        "the schedule starts its runs with the default spec",
        "monitoring/cli.py",
        '"spec": _spec(spec, dim=dim, epochs=epochs),\n        "settings": {"profile": "cluster"},',
        '"settings": {"profile": "cluster"},',
        (REQUEST, "-k", "schedule_command"),
    ),
    Mutant(
        "secrets are YAML-parsed again",
        "src/fusionrec/config.py",
        "        if tuple(keys) in secrets:",
        "        if False:",
        (CONFIG, "-k", "secret"),
    ),
    Mutant(
        "the predictor admits all of istio-system",
        "manifests/base/security/network-policies.yaml",
        "          podSelector:\n            matchLabels: {istio: cluster-local-gateway}\n      ports:\n"
        "        - {protocol: TCP, port: 8080}\n        - {protocol: TCP, port: 8012}   # Knative's queue-proxy",
        "      ports:\n        - {protocol: TCP, port: 8080}\n"
        "        - {protocol: TCP, port: 8012}   # Knative's queue-proxy",
        (SECURITY, "-k", "network_policies"),
    ),
    Mutant(
        "the deployer may change the image",
        "manifests/base/security/deployer-admission.yaml",
        "object.spec.all(k, k == 'predictor' || (k in oldObject.spec && object.spec[k] == oldObject.spec[k]))",
        "object.spec.all(k, true)",
        (SECURITY, "-k", "deployer"),
    ),
    Mutant(
        "a failed micro-batch fails every request in it",
        "src/fusionrec/api/batching.py",
        "            if len(batch) > 1:  # one request's bad input",
        "            if False:  # one request's bad input",
        (BATCHING, "-k", "bad_input"),
    ),
    Mutant(
        "the micro-batcher scores one request at a time",
        "src/fusionrec/api/batching.py",
        "        while rows < self.max_rows:",
        "        while False:",
        (BATCHING, "-k", "one_batch"),
    ),
    Mutant(
        "the feature store lookups are never merged",
        "src/fusionrec/api/batching.py",
        "                while self._waiting and (not batch or",
        "                while self._waiting and (not batch and",
        (BATCHING, "-k", "in_flight"),
    ),
    Mutant(
        "the gRPC hop turns the predictor's 404 into a 503",
        "src/fusionrec/api/rpc.py",
        "        StatusCode.NOT_FOUND: 404,\n",
        "        StatusCode.NOT_FOUND: 503,\n",
        ("tests/unit/test_rpc.py", "-k", "map_back"),
    ),
    Mutant(
        "the predictor's gRPC server listens on every address",
        "src/fusionrec/api/rpc.py",
        'host = f"[{s.bind}]" if ":" in s.bind else s.bind',
        'host = "0.0.0.0"',
        ("tests/unit/test_rpc.py", "-k", "bind_address"),
    ),
    Mutant(
        "the gRPC endpoint has no in-flight limit",
        "src/fusionrec/api/rpc.py",
        "            if self.inflight >= max_inflight:",
        "            if False:",
        ("tests/unit/test_rpc.py", "-k", "in_flight"),
    ),
    Mutant(
        "a bridged space weighs as much as the query's own",
        "src/fusionrec/recommender.py",
        "        weights = [{m: self.bridge_weight for m in via} for _, via in spaced]",
        "        weights = [{m: 1.0 for m in via} for _, via in spaced]",
        ("tests/integration/test_serving.py", "-k", "both_spaces_by_default and collocated"),
    ),
    Mutant(
        "a CLIP checkpoint's joint space is ignored for text queries",
        "src/fusionrec/recommender.py",
        '        if image is None or getattr(image, "joint", None) is None or "text" not in self.encoders:',
        "        if True:",
        ("tests/integration/test_clip.py", "-k", "joint_space"),
    ),
    Mutant(
        "a query's top similarity is compared across the spaces searched",
        "src/fusionrec/monitoring/drift.py",
        "    _same_kind_scores(frame, reference, cur, ref)\n",
        "",
        (MONITORING, "-k", "one_space"),
    ),
    Mutant(
        "a one-space query has no reference in the queries it was made from",
        "src/fusionrec/monitoring/reference.py",
        '    made = kind.split(">", 1)[0]',
        "    made = kind",
        (MONITORING, "-k", "one_space"),
    ),
    Mutant(
        "the photo head is left out of the image space searched",
        "src/fusionrec/search.py",
        '        return self.head.extend(unit) if m == "image" and self.head is not None else unit',
        "        return unit",
        ("tests/integration/test_photo_head.py", "-k", "side_by_side"),
    ),
    Mutant(
        "the photos are set in the text space by a least-squares fit without its ridge",
        "src/fusionrec/bridge.py",
        "    gram = x.T @ x + RIDGE * len(x) * np.eye(x.shape[1])",
        "    gram = x.T @ x + 1e-6 * np.eye(x.shape[1])",
        ("tests/unit/test_bridge.py", "-k", "ridge_regression"),
    ),
    Mutant(
        "a text query searching the image space is left in the text space's own index",
        "src/fusionrec/search.py",
        "                    out[PHOTOS_BY_TEXT] = query[source]  # the text meets the photos in its own space",
        "                    out[target] = query[source]",
        ("tests/unit/test_bridge.py", "-k", "carries_a_query"),
    ),
    Mutant(
        "the titles are shipped but never counted",
        "src/fusionrec/search.py",
        "            s = np.maximum(s, self.titles[items] @ q)",
        "            s = s",
        ("tests/integration/test_photo_head.py", "-k", "title_query"),
    ),
    Mutant(
        "the local step cache is shared by every version of the code",
        "pipelines/training.py",
        '    cache_root = root / ".kfp_cache" / code_digest()',
        '    cache_root = root / ".kfp_cache"',
        ("tests/e2e/test_pipeline.py", "-k", "rerun_reuses"),
    ),
    Mutant(
        "the approximate top-K keeps the excluded items",
        "src/fusionrec/topk.py",
        "        return np.setdiff1d(found, excluded)",
        "        return np.unique(found)",
        ("tests/integration/test_topk.py", "-k", "exclusions"),
    ),
    Mutant(
        "the approximate top-K leaves the history terms' best out of its shortlist",
        "src/fusionrec/topk.py",
        "            found = np.concatenate([found, support[top].numpy()])",
        "            found = found",
        ("tests/integration/test_topk.py", "-k", "short_shortlist"),
    ),
    Mutant(
        "two hops' servers run a worker per core too",
        "src/fusionrec/api/workers.py",
        "    if not collocated:\n        return 1\n",
        "",
        ("tests/unit/test_config.py", "-k", "workers"),
    ),
]

# The mutants CI runs on every submission (``--ci``): those whose tests took least time in a full run
# (``--all``; build/mutants/results.json), spread over the layers.
CI_SUBSET: tuple[str, ...] = (
    "AUC computed the wrong way round",
    "the given split swaps valid and test",
    "the sampled softmax without its logQ correction",
    "the item-item weight taken from the grid's start, not the validation",
    "an explanation leaves out the item bias",
    "every KServe route is open again",
    "the user id is logged as it came, not pseudonymised",
    "the debounce is ignored",
    "a rollout puts the template's spec over the overlay's",
    "the deploy step may patch every InferenceService",
    "prod renders with placeholder digests",
)


def scratch_copy(tests_from: str | None = None) -> Path:
    """The repository's tracked and untracked sources, without the virtual environment or artifacts;
    with ``tests_from``, its ``tests/`` folder as it was at that git revision."""
    target = Path(tempfile.mkdtemp(prefix="fusionrec-mutants-")) / REPO.name
    shutil.copytree(
        REPO,
        target,
        ignore=shutil.ignore_patterns(".git", ".venv", "artifacts", "__pycache__", ".pytest_cache", "*.egg-info"),
    )
    if (REPO.parent / "shared").is_dir():  # the data and the CRDs beside the checkout, as ../shared
        (target.parent / "shared").symlink_to(REPO.parent / "shared")
    if tests_from:
        shutil.rmtree(target / "tests")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", tests_from, "tests"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _selection(mutant: Mutant, whole_files: bool) -> tuple[str, ...]:
    """The pytest arguments of a mutant's tests (``whole_files``: the named files without the ``-k`` filter)."""
    if not whole_files:
        return tuple(mutant.tests)
    return tuple(a for n, a in enumerate(mutant.tests) if "-k" not in mutant.tests[max(0, n - 1) : n + 1])


def _pytest(copy: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    """Run ``tests`` in ``copy``; returns (exit code, seconds, pytest's last line)."""
    env = {**os.environ, "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}"}
    t = time.perf_counter()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - t, "timed out after 900 s"
    return r.returncode, time.perf_counter() - t, (r.stdout.strip().splitlines() or [""])[-1]


def baseline(copy: Path, tests: tuple[str, ...]) -> tuple[str, float, str]:
    """The selection on the unmutated copy: ("green", seconds, last line) when it passes, else why not."""
    code, seconds, last = _pytest(copy, tests)
    if code == 0:
        return "green", seconds, last
    return ("selects no test" if code == 5 else f"red (exit {code})"), seconds, last


def run(mutant: Mutant, copy: Path, whole_files: bool = False) -> tuple[str, float, str]:
    """Apply one mutant in ``copy``, run its tests, restore the file. Returns (verdict, seconds, last line).
    Call it only for a mutant whose :func:`baseline` is green."""
    path = copy / mutant.file
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return "STALE (its anchor is not in the code once)", 0.0, ""
    path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
    try:
        code, seconds, last = _pytest(copy, _selection(mutant, whole_files))
    finally:
        path.write_text(original, encoding="utf-8")
    verdict = (
        "caught"
        if code == 1 and "failed" in last
        else "MISSED"
        if code == 0
        else "MISSED (no test selected)"
        if code == 5
        else f"error (exit {code})"
    )
    return verdict, seconds, last


def checkout_label() -> str:
    """The commit the scratch copy is taken from (``+changes`` when the working tree has uncommitted changes)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import record

    return record.commit()


def write_summary(rows: list[dict], out: Path, label: str) -> None:
    """One table of a whole run at one commit (``label``): ``summary.md`` and ``results.json`` in ``out``."""
    import json

    caught = sum(r["verdict"] == "caught" for r in rows)
    green = sum(r["baseline"] == "green" for r in rows)
    lines = [
        f"# Mutants at {label}",
        "",
        f"{caught} of {len(rows)} caught; {green} of {len(rows)} baselines green "
        f"({sum(r['seconds'] for r in rows):.0f} s of mutated runs).",
        "",
        "| mutant | file | baseline | verdict | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['name']} | `{r['file']}` | {r['baseline']} | {r['verdict']} | {r['seconds']:.0f} |" for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"commit": label, "mutants": rows}, indent=2), encoding="utf-8")
    import record  # benchmarks/, put on the path by checkout_label

    record.write(
        "mutants",
        "python tests/mutants.py --all",
        [
            record.Figure(
                "caught",
                f"{caught} of {len(rows)} deliberate breakages caught, each by the tests that name it; {green} of "
                f"{len(rows)} baselines green (the tests pass on the unmutated code first)",
                readme=f"deliberate breakages caught: {caught} of {len(rows)}, every baseline green"
                if green == len(rows)
                else f"deliberate breakages caught: {caught} of {len(rows)} ({len(rows) - green} baselines red)",
                value=caught,
                bar="all caught, every baseline green",
                met=caught == len(rows) == green,
            )
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", default=None, help="Run the mutants whose name contains one of these words."
    )
    parser.add_argument("--ci", action="store_true", help="Run the short subset CI runs (CI_SUBSET).")
    parser.add_argument("--all", action="store_true", help="Also write the run as one table (build/mutants/).")
    parser.add_argument("--list", action="store_true", help="List the mutants and exit.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch copy (its path is printed).")
    parser.add_argument("--tests-from", default=None, help="Run an older commit's tests/ against the same breakages.")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(w.lower() in m.name.lower() for w in args.only)]
    if args.ci:
        unknown = sorted(set(CI_SUBSET) - {m.name for m in MUTANTS})
        if unknown:
            print(f"CI_SUBSET names no mutant: {unknown}")
            return 1
        chosen = [m for m in chosen if m.name in CI_SUBSET]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.file} -> {' '.join(m.tests)}")
        return 0
    label = checkout_label()  # before the run: the working tree may move on while it runs
    copy = scratch_copy(args.tests_from)
    print(f"scratch copy: {copy}")
    whole = bool(args.tests_from)
    baselines: dict[tuple[str, ...], tuple[str, float, str]] = {}
    rows = []
    try:
        for m in chosen:
            tests = _selection(m, whole)
            if tests not in baselines:
                baselines[tests] = baseline(copy, tests)
            base, base_s, base_last = baselines[tests]
            if base == "green":
                verdict, seconds, last = run(m, copy, whole_files=whole)
            else:
                verdict, seconds, last = f"BASELINE {base}", base_s, base_last
            rows.append(
                {
                    "name": m.name,
                    "file": m.file,
                    "tests": list(tests),
                    "baseline": base,
                    "baseline_seconds": round(base_s, 1),
                    "verdict": verdict,
                    "seconds": round(seconds, 1),
                }
            )
            print(f"{verdict:>8}  {m.name}  (baseline {base} in {base_s:.0f} s; {seconds:.0f} s; {last})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(copy.parent, ignore_errors=True)
    caught = sum(r["verdict"] == "caught" for r in rows)
    red = sum(r["baseline"] != "green" for r in rows)
    print(f"{caught} of {len(rows)} mutants caught; {red} red baselines")
    if args.all:
        write_summary(rows, REPO / "build" / "mutants", label)
        print(f"table: {REPO / 'build' / 'mutants' / 'summary.md'}")
    return 1 if caught < len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
