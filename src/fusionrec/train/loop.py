"""Training the fusion model: CPU or CUDA (bf16 autocast), DDP through torchrun, early stopping on
validation NDCG@20, checkpoints and resume, a progress bar, curves as PNG."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fusionrec.data.splits import Split
from fusionrec.encoders.base import pick_device
from fusionrec.errors import TrainingDiverged
from fusionrec.evaluation import Metrics, auc_logloss, evaluate_ranking
from fusionrec.model import FusionConfig, FusionRecModel

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """How to train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(40, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(4, ge=1)  # validations without a better validation NDCG@20 before stopping
    # Validation (early stopping's check) once an epoch, or every `valid_every` training rows where an epoch
    # is longer: at 10^6 interactions the best model comes within a few epochs, and whole epochs of
    # patience were most of the training time (benchmarks/scale.py).
    valid_every: int = Field(200_000, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    rank_negatives: int = Field(1, ge=1)  # sampled negatives per positive for the ranking head
    deterministic: bool = True  # bit-identical reruns under a seed (deterministic kernels; a little slower)
    # The retrieval loss: a full softmax over the catalogue, or a sampled one (the batch's positives and
    # `negatives` uniform draws, logQ-corrected); "auto" samples above `sampled_above` items, where the
    # full softmax's cost, which grows with the catalogue, dominates a step.
    softmax: Literal["auto", "full", "sampled"] = "auto"
    negatives: int = Field(1024, ge=1)
    sampled_above: int = Field(5000, ge=1)
    # With the sampled softmax a step costs little beyond the item tower (one pass over the items the
    # batch needs), so larger batches amortise it; the full softmax keeps `batch_size`. Never so large that
    # an epoch has fewer than `min_steps_per_epoch` steps (and never below `batch_size`): too few steps an
    # epoch cost the sampled softmax accuracy (docs/benchmarks.md, the sampled-softmax row).
    sampled_batch_size: int = Field(4096, ge=1)
    min_steps_per_epoch: int = Field(100, ge=1)
    valid_users: int = Field(5000, ge=1)  # early stopping's validation users at most (a fixed random sample)
    # An exponential moving average of the weights, `average_decay` per step (docs/model.md, "The weight
    # average"): "on", validation scores it and training returns it; "chosen", validation scores both the
    # live and the averaged weights at every check and the better is kept; "off", the live weights alone.
    average_weights: Literal["off", "on", "chosen"] = "off"
    average_decay: float = Field(0.97, gt=0, lt=1)


@dataclass
class TrainResult:
    """A trained model and how training went."""

    model: FusionRecModel
    history: list[dict[str, float]]
    best_epoch: int
    best_valid: dict[str, float]
    samples_per_second: float
    seconds: float
    user_history: torch.Tensor = field(repr=False, default=None)
    user_history_mask: torch.Tensor = field(repr=False, default=None)
    steps: int = 0  # optimizer steps this process took in this call (under DDP: this rank's share)
    item_item: dict[str, float] = field(default_factory=dict)  # what fit_item_item chose (empty: no term)
    content: dict[str, float] = field(default_factory=dict)  # what fit_content_term chose (empty: no term)


def _plain(value):
    """``value`` with numpy scalars turned into Python numbers (what ``torch.load(weights_only=True)`` reads)."""
    import json

    return json.loads(json.dumps(value, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def user_histories(train, n_users: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_users, length] item indices of each user's latest training items (oldest first) and a mask."""
    hist = np.zeros((n_users, max(1, length)), dtype=np.int64)
    mask = np.zeros((n_users, max(1, length)), dtype=bool)
    if length == 0 or len(train) == 0:
        return torch.from_numpy(hist), torch.from_numpy(mask)
    t = train.sort_values(["user_idx", "timestamp"], kind="stable")
    for u, g in t.groupby("user_idx")["item_idx"]:
        items = g.to_numpy()[-length:]
        hist[int(u), -len(items) :] = items
        mask[int(u), -len(items) :] = True
    return torch.from_numpy(hist), torch.from_numpy(mask)


def item_features(embeddings: dict, modalities: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """modality -> (values, mask) tensors from the embedding pipeline's output."""
    return {
        m: (
            torch.from_numpy(np.ascontiguousarray(embeddings[m].values, dtype=np.float32)),
            torch.from_numpy(np.asarray(embeddings[m].mask, dtype=bool)),
        )
        for m in modalities
    }


def build_model(cfg: FusionConfig, split: Split, embeddings: dict) -> FusionRecModel:
    """A model with its frozen item features and the seen-in-training mask installed."""
    model = FusionRecModel(cfg)
    seen = torch.zeros(cfg.n_items, dtype=torch.bool)
    seen[torch.from_numpy(split.train["item_idx"].to_numpy(np.int64, copy=True))] = True
    model.set_item_features(item_features(embeddings, sorted(cfg.modalities)), seen)
    return model


def score_function(
    model: FusionRecModel, hist: torch.Tensor, mask: torch.Tensor, device: str = "cpu", *, item_item: bool = True
):
    """user indices -> retrieval scores over the whole catalogue (eval mode, no gradients); with
    ``item_item=False`` the two towers' scores alone (no item-item and no content term)."""
    model.eval()
    with torch.inference_mode():
        items = model.items()

    def scores(users: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.asarray(users, dtype=np.int64))  # indexes the histories where they are (CPU)
        with torch.inference_mode():
            h, m = hist[u].to(device), mask[u].to(device)
            s = model.logits(model.users(u.to(device), h, m, items.vectors), items.vectors, items.bias)
            if item_item and model.has_item_item and float(model.ii_weight) != 0.0:
                s = s + model.item_item(h, m)
            if item_item and model.has_content_term:
                s = s + model.content_term(h, m)
            return s.float().cpu().numpy()

    return scores


def _diagnose(model: FusionRecModel, loss: torch.Tensor, epoch: int, step: int, cfg: TrainConfig) -> str:
    bad_inputs = [m for m in model.modality_names if not torch.isfinite(getattr(model, f"feat_{m}")).all()]
    bad_params = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    hint = (
        f"non-finite input features in {bad_inputs}"
        if bad_inputs
        else f"non-finite weights in {bad_params[:3]}: lower the learning rate (now {cfg.lr})"
        if bad_params
        else f"lower the learning rate (now {cfg.lr}) or raise the temperature"
    )
    return f"training diverged: loss {loss.item()} at epoch {epoch}, step {step}; {hint}; no artifact written"


def uses_sampled_softmax(cfg: TrainConfig, n_items: int) -> bool:
    """Whether training takes the sampled softmax (see TrainConfig.softmax)."""
    return cfg.softmax == "sampled" or (cfg.softmax == "auto" and n_items > cfg.sampled_above)


def batch_size(cfg: TrainConfig, n_rows: int, sampled: bool) -> int:
    """Rows per step: ``batch_size`` for the full softmax; for the sampled one ``sampled_batch_size``,
    lowered to keep ``min_steps_per_epoch`` steps an epoch, never below ``batch_size``."""
    if not sampled:
        return cfg.batch_size
    return max(cfg.batch_size, min(cfg.sampled_batch_size, n_rows // cfg.min_steps_per_epoch))


def check_steps(steps: int, rows_per_step: int, every: int) -> set[int]:
    """The steps (0-based) of an epoch after which training validates: the last, and evenly spaced ones
    so that about ``every`` training rows pass between two checks when an epoch is longer."""
    if steps == 0:
        return set()
    k = max(1, round(steps * rows_per_step / every))
    return {max(0, round(steps * (j + 1) / k) - 1) for j in range(k)} | {steps - 1}


class NegativeSampler:
    """Candidates for the sampled softmax: a batch's positives (in-batch negatives for every other row,
    drawn in proportion to popularity) and ``cfg.negatives`` items drawn uniformly from those seen in
    training, with the log of each candidate's expected count in such a draw (the logQ correction):
    ``batch * p(i) + negatives / n_seen``, ``p(i)`` the item's share of the training positives."""

    def __init__(self, train_items: torch.Tensor, n_items: int, cfg: TrainConfig) -> None:
        counts = torch.bincount(train_items, minlength=n_items).double()
        self.share = counts / counts.sum()
        self.seen = torch.nonzero(counts > 0).flatten()
        self.negatives = cfg.negatives

    def draw(
        self, positives: torch.Tensor, generator: torch.Generator, device: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        uniform = self.seen[torch.randint(len(self.seen), (self.negatives,), generator=generator)]
        candidates = torch.unique(torch.cat([positives.cpu(), uniform]))
        expected = len(positives) * self.share[candidates] + self.negatives / len(self.seen)
        return candidates.to(device), torch.log(expected).float().to(device)


class WeightAverage:
    """An exponential moving average of a model's parameters, ``decay`` per step, bias-corrected as Adam's
    moments are (``sum / (1 - decay^t)``), so that it starts from the trained weights and not from zero."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.steps = decay, 0
        self.sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        for n, p in model.named_parameters():
            self.sums[n].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)

    @torch.no_grad()
    def swap_in(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The averaged weights into ``model``; returns the live ones, for :meth:`swap_out`."""
        live, scale = {}, 1.0 / (1.0 - self.decay**self.steps) if self.steps else 0.0
        for n, p in model.named_parameters():
            live[n] = p.detach().clone()
            if self.steps:
                p.copy_(self.sums[n] * scale)
        return live

    @torch.no_grad()
    def swap_out(self, model: torch.nn.Module, live: dict[str, torch.Tensor]) -> None:
        for n, p in model.named_parameters():
            p.copy_(live[n])


def _validate(model, hist, hmask, device, valid, split, model_cfg):
    """Early stopping's validation metrics (NDCG@20 and Recall@20) of the model's weights as they are."""
    return evaluate_ranking(
        score_function(model, hist, hmask, device), valid, [split.train], model_cfg.n_users, model_cfg.n_items, ks=(20,)
    )


def train(
    split: Split,
    embeddings: dict,
    model_cfg: FusionConfig,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    curves_png: Path | None = None,
    on_epoch_end: Callable[[int, FusionRecModel], None] | None = None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
) -> TrainResult:
    """Train on ``split.train``, early-stop on ``split.valid`` NDCG@20, return the best model.

    Under ``torchrun`` (more than one process) the model is wrapped in DistributedDataParallel (gloo on
    CPU, NCCL on CUDA); each rank takes its share of every epoch's batches; rank 0 validates and decides
    when to stop. With ``checkpoint_dir``, every epoch is checkpointed and an interrupted run resumes
    from the last one. ``on_epoch_end(epoch, model)`` is called on every rank after each epoch's last
    step (1-based epoch), before validation and before any weights are exchanged between ranks;
    ``on_step(epoch, step, rows)`` after every optimiser step, with the positions in ``split.train`` of
    the rows this rank's batch held. Both watch training without changing it.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
    """
    import torch.distributed as dist

    from fusionrec.progress import progress as progress_bar

    distributed = dist.is_available() and dist.is_torchelastic_launched()
    device = pick_device(cfg.device)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if device == "cuda" and distributed:
        torch.cuda.set_device(rank % torch.cuda.device_count())

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    model = build_model(model_cfg, split, embeddings).to(device)
    hist, hmask = user_histories(split.train, model_cfg.n_users, model_cfg.history_window)
    # training attends to the tower's window only (the longer one is the item-item term's, fitted after)
    window = slice(hist.shape[1] - model_cfg.history_length, None) if model_cfg.history_length else slice(None)
    hist_d, hmask_d = hist[:, window].to(device), hmask[:, window].to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)  # buffers are frozen inputs

    users = torch.from_numpy(split.train["user_idx"].to_numpy(np.int64))
    items = torch.from_numpy(split.train["item_idx"].to_numpy(np.int64))
    n = len(users)
    valid = split.valid  # early stopping watches at most cfg.valid_users of them (a fixed sample)
    valid_users = np.unique(valid["user_idx"].to_numpy())
    if len(valid_users) > cfg.valid_users:
        keep = np.random.default_rng(cfg.seed).choice(valid_users, cfg.valid_users, replace=False)
        valid = valid[valid["user_idx"].isin(keep)]
    sampler = NegativeSampler(items, model_cfg.n_items, cfg) if uses_sampled_softmax(cfg, model_cfg.n_items) else None
    start_epoch, best, best_epoch, best_state, history, bad = 0, -1.0, -1, None, [], 0
    average = WeightAverage(model, cfg.average_decay) if cfg.average_weights != "off" else None
    ckpt = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)  # tensors and plain values only: no code
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best, best_epoch, history, bad = (
            state["epoch"] + 1,
            state["best"],
            state["best_epoch"],
            state["history"],
            state["bad"],
        )
        best_state = state["best_state"]
        if average is not None and state.get("average"):
            average.steps, average.sums = state["average"]["steps"], state["average"]["sums"]
        torch.set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    )
    t0 = time.perf_counter()
    seen_samples, steps_taken = 0, 0
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(n, generator=g)
        size = batch_size(cfg, n, sampler is not None)
        batches = [perm[s : s + size] for s in range(0, n, size)]
        mine = batches[rank::world]
        if distributed:  # every rank must take the same number of steps
            steps = min(len(batches[r::world]) for r in range(world))
            mine = mine[:steps]
        total, rows_done = 0.0, 0
        checks = check_steps(len(mine), size * world, cfg.valid_every)
        bar = progress_bar(
            mine, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", enabled=progress and rank == 0, leave=False
        )
        stop = torch.zeros(1)
        for step, b in enumerate(bar):
            u, i = users[b].to(device), items[b].to(device)
            h, hm = hist_d[u], hmask_d[u] & (hist_d[u] != i.unsqueeze(1))  # never attend to the target
            sampled = sampler.draw(i, g, device) if sampler is not None else None
            with autocast:
                loss = net(u, i, h, hm, cfg.rank_negatives, sampled)  # net is the model, or DDP around it
            if not torch.isfinite(loss):
                raise TrainingDiverged(_diagnose(model, loss, epoch + 1, step, cfg))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update(model)
            total += loss.item() * len(b)
            rows_done += len(b)
            seen_samples += len(b) * world
            steps_taken += 1
            if on_step is not None:
                on_step(epoch + 1, step, b)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step not in checks:
                continue
            last = step == len(mine) - 1
            if last and on_epoch_end is not None:
                on_epoch_end(epoch + 1, model)
            if rank == 0:  # validate: at the epoch's end, and within long epochs (a fractional epoch)
                at = epoch + 1 if last else round(epoch + (step + 1) / len(mine), 2)
                scored = []  # (validation metrics, whether the averaged weights), the live weights first
                if cfg.average_weights != "on":
                    scored.append((_validate(model, hist, hmask, device, valid, split, model_cfg), False))
                if average is not None:
                    live = average.swap_in(model)
                    scored.append((_validate(model, hist, hmask, device, valid, split, model_cfg), True))
                    average.swap_out(model, live)
                metrics, averaged = max(scored, key=lambda s: s[0].ndcg[20])  # the live weights on a tie
                val = metrics.ndcg[20]
                history.append(
                    {
                        "epoch": at,
                        "loss": total / max(1, rows_done),
                        "valid_ndcg@20": val,
                        "valid_recall@20": metrics.recall[20],
                        "seconds": time.perf_counter() - t0,
                        **({"averaged": averaged} if average is not None else {}),
                    }
                )
                log.info("epoch %s: loss %.4f valid NDCG@20 %.4f", at, history[-1]["loss"], val)
                total, rows_done = 0.0, 0
                if val > best:
                    best, best_epoch, bad = val, at, 0
                    if averaged:
                        live = average.swap_in(model)
                    best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
                    if averaged:
                        average.swap_out(model, live)
                else:
                    bad += 1
                if bad >= cfg.patience:
                    stop[0] = 1
                if ckpt is not None and last:
                    ckpt.parent.mkdir(parents=True, exist_ok=True)
                    # plain values only (no numpy scalars): the checkpoint loads with weights_only=True
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "epoch": int(epoch),
                            "best": float(best),
                            "best_epoch": int(best_epoch),
                            "history": _plain(history),
                            "bad": int(bad),
                            "best_state": best_state,
                            "average": {"steps": average.steps, "sums": average.sums} if average else None,
                            "rng": torch.get_rng_state(),
                        },
                        ckpt.with_suffix(".tmp"),
                    )
                    ckpt.with_suffix(".tmp").replace(ckpt)
            net.train()  # scoring put the model in eval mode; the epoch may go on
            if distributed:
                dist.broadcast(stop, src=0)
            if stop.item():
                break
        if stop.item():
            break
    seconds = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    item_item = {}
    if rank == 0 and model.has_item_item:  # fitted once the network is final (fusionrec.itemitem)
        from fusionrec.itemitem import fit_item_item

        item_item = fit_item_item(
            model,
            split,
            hist,
            hmask,
            score_function(model, hist, hmask, device, item_item=False),
            seed=cfg.seed,
            device=device,
        )
    content = {}
    if rank == 0 and model.config.content_term and model.modality_names:  # then the content term beside it
        from fusionrec.itemitem import fit_content_term, fit_taste_term

        content = fit_content_term(
            model, split, hist, hmask, score_function(model, hist, hmask, device), seed=cfg.seed, device=device
        )
        content.update(  # and its taste term beside both
            fit_taste_term(
                model, split, hist, hmask, score_function(model, hist, hmask, device), seed=cfg.seed, device=device
            )
        )
    if distributed:  # rank 0's best weights everywhere
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    model.eval()
    if rank == 0 and curves_png is not None and history:
        save_curves(history, curves_png)
    best_valid = next((h for h in history if h["epoch"] == best_epoch), {})
    return TrainResult(
        model,
        history,
        best_epoch,
        best_valid,
        seen_samples / max(seconds, 1e-9),
        seconds,
        hist,
        hmask,
        steps_taken,
        item_item,
        content,
    )


def save_curves(history: list[dict[str, float]], path: Path) -> None:
    """Training loss and validation NDCG@20 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(epochs, [h["loss"] for h in history], marker="o")
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(epochs, [h["valid_ndcg@20"] for h in history], marker="o", color="tab:green")
    ax[1].set(title="validation NDCG@20", xlabel="epoch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_model(
    model: FusionRecModel, hist, hmask, split: Split, part: str = "test", device: str = "cpu"
) -> Metrics:
    """The model's full-ranking metrics on ``split.test`` (train and valid excluded) or ``split.valid``."""
    target = split.test if part == "test" else split.valid
    exclude = [split.train, split.valid] if part == "test" else [split.train]
    return evaluate_ranking(
        score_function(model, hist, hmask, device),
        target,
        exclude,
        split.n_users,
        split.n_items,
        candidates=split.cold_items if len(split.cold_items) else None,
    )


def ranking_head_metrics(
    model: FusionRecModel, hist, hmask, split: Split, negatives: int = 4, seed: int = 0, device: str = "cpu"
) -> dict[str, float]:
    """AUC and log loss of the ranking head on the test positives against ``negatives`` sampled items per
    positive that the user never interacted with (in any part of the split)."""
    rng = np.random.default_rng(seed)
    seen = {
        (int(u), int(i))
        for part in (split.train, split.valid, split.test)
        for u, i in zip(part["user_idx"], part["item_idx"])
    }
    users = split.test["user_idx"].to_numpy(np.int64)
    pos = split.test["item_idx"].to_numpy(np.int64)
    neg_u = np.repeat(users, negatives)
    neg = rng.integers(0, split.n_items, len(neg_u))
    for k in range(len(neg)):  # resample the (rare) negatives the user did interact with
        while (int(neg_u[k]), int(neg[k])) in seen:
            neg[k] = rng.integers(0, split.n_items)
    model.eval()
    with torch.inference_mode():
        items = model.items().vectors

        def logits(u: np.ndarray, i: np.ndarray) -> np.ndarray:
            out = []
            for s in range(0, len(u), 4096):
                ub = torch.from_numpy(u[s : s + 4096])
                uv = model.users(ub.to(device), hist[ub].to(device), hmask[ub].to(device), items)
                out.append(model.rank(uv, items[torch.from_numpy(i[s : s + 4096]).to(device)]).float().cpu().numpy())
            return np.concatenate(out) if out else np.zeros(0)

        auc, logloss = auc_logloss(logits(users, pos), logits(neg_u, neg))
    return {"auc": auc, "logloss": logloss}
