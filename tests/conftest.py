"""Shared fixtures: a small synthetic dataset, the real MovieLens folder when present, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusionrec.config import Settings
from fusionrec.data.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
MOVIELENS = (REPO / ".." / "shared" / "data" / "movielens-100k-mm").resolve()
MOVIELENS_CONTRACT = REPO / "configs" / "datasets" / "movielens-100k-mm.yaml"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def synth_clean(tmp_path_factory) -> Path:
    """A small synthetic dataset without defects; returns its folder (contract: dataset.yaml)."""
    out = tmp_path_factory.mktemp("synth") / "clean"
    generate(SynthConfig(users=120, items=80, seed=11, workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_defects(tmp_path_factory) -> Path:
    """A small synthetic dataset with planted defects (see truth/truth.json)."""
    out = tmp_path_factory.mktemp("synth") / "defects"
    generate(SynthConfig(users=150, items=100, seed=5, defects=0.05, workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def movielens() -> Path:
    if not (MOVIELENS / "ratings.csv").exists():
        pytest.skip(f"real data absent: {MOVIELENS} (the shared movielens-100k-mm folder) is not on this machine")
    return MOVIELENS
