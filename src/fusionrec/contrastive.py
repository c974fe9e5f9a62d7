"""One trainer for the linear maps learned contrastively from a catalogue's own pairs (the bridge between
the text and image spaces, the photo head): a symmetric InfoNCE over batches of pairs, AdamW, a check of
a held-out figure every few steps, the best step's weights kept, early stopping by patience."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Schedule(NamedTuple):
    """How a map is trained: the InfoNCE temperature, AdamW's rate and decay, the steps at most, a check
    every ``check_every`` steps, and the checks without a better figure before stopping (``patience``)."""

    temperature: float
    learning_rate: float
    weight_decay: float
    steps: int
    check_every: int
    patience: int


def fit_map(w, pairs: Callable[[], tuple], check: Callable[[], float], schedule: Schedule) -> tuple:
    """Train the parameter ``w`` (a torch ``Parameter``) in place and return (the best weights, the best
    ``check()``, its step).

    Args:
        pairs: draws one batch: (left [B, d], right [B, d]) unit rows computed with ``w``, row i of each a
            positive pair, the other rows its negatives.
        check: the held-out figure to maximise, computed with the current ``w`` (no gradient needed).
    """
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW([w], lr=schedule.learning_rate, weight_decay=schedule.weight_decay)
    best, kept, step_kept = -1.0, w.detach().clone(), 0
    for step in range(1, schedule.steps + 1):
        left, right = pairs()
        logits = left @ right.T / schedule.temperature
        labels = torch.arange(len(left))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % schedule.check_every == 0:
            with torch.no_grad():
                score = check()
            if score > best:
                best, kept, step_kept = score, w.detach().clone(), step
            elif step - step_kept >= schedule.patience * schedule.check_every:
                break
    return kept, best, step_kept
