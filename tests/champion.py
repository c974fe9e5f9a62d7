"""A small trained champion for the tests that serve one: the fusion model on the synthetic set (text and
image, 2 epochs), saved to a registry and promoted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fusionrec.data.splits import make_split
from fusionrec.registry import gate, save_artifact
from fusionrec.train.compare import fit, fusion_config, model_card
from fusionrec.train.loop import TrainConfig


def trained_champion(models: Path, ds, emb):
    """Train, save under ``models`` and promote; returns the split and the version folder."""
    split = make_split(ds, "random", seed=0)
    cfg = fusion_config(ds, emb, ["text", "image"], dim=16)
    result, test = fit(ds, emb, split, cfg, TrainConfig(epochs=2, batch_size=256, device="cpu"), progress=False)
    path = save_artifact(
        models,
        result.model,
        dataset=ds,
        encoders={m: {"identity": emb[m].identity, "dim": emb[m].dim} for m in cfg.modalities},
        training={},
        history=result.user_history,
        history_mask=result.user_history_mask,
        metrics={"test": test},
        card=model_card(ds.name, split, cfg, result, test, {}),
        seen=pd.concat([split.train, split.valid, split.test]),
    )
    gate(models, path)
    return split, path
