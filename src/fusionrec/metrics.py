"""A model artifact's ``metrics.json``: one reader and one writer, typed.

What it holds: the test and validation figures (``test``, ``valid``: metric name -> value, e.g.
``ndcg@20``), the split it was measured on (``split``: protocol, seed, sizes), the version label
(``version``) and when it was written (``created``); the trainer adds what it knows of the run (best epoch,
samples per second, where the training rows came from), kept as given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusionrec.errors import DatasetError

FILE = "metrics.json"


class Split(BaseModel):
    """The split the figures were measured on."""

    model_config = ConfigDict(extra="allow")

    protocol: str | None = None
    seed: int = 0


class Metrics(BaseModel):
    """A version's figures (see the module docstring); fields beyond these are kept as written."""

    model_config = ConfigDict(extra="allow")

    test: dict[str, float] = Field(default_factory=dict)
    valid: dict[str, float] = Field(default_factory=dict)
    split: Split = Field(default_factory=Split)
    version: str | None = None
    created: str | None = None

    def figure(self, metric: str) -> float:
        """A test figure.

        Raises:
            DatasetError: the artifact has no such figure.
        """
        if metric not in self.test:
            raise DatasetError(f"metrics.json has no test figure {metric!r} (it has {sorted(self.test)})")
        return float(self.test[metric])

    def same_protocol(self, other: Metrics) -> bool:
        return self.split.protocol == other.split.protocol


def read(folder: str | Path) -> Metrics:
    """The ``metrics.json`` of an artifact folder.

    Raises:
        DatasetError: the file is missing, not JSON, or not of this shape.
    """
    path = Path(folder) / FILE
    try:
        return Metrics.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise DatasetError(f"{folder}: not a model artifact (no {FILE})") from None
    except (OSError, UnicodeDecodeError, ValueError, ValidationError) as e:
        raise DatasetError(f"{path}: not a readable {FILE} ({type(e).__name__})") from None


def of(values: Metrics | dict[str, Any]) -> Metrics:
    """``values`` as :class:`Metrics` (a dict as read from a file, or Metrics already).

    Raises:
        DatasetError: not of this shape.
    """
    if isinstance(values, Metrics):
        return values
    try:
        return Metrics.model_validate(values)
    except ValidationError as e:
        raise DatasetError(f"not a {FILE}: {e.errors()[0].get('msg', 'bad value')}") from None


def write(folder: str | Path, metrics: Metrics | dict[str, Any]) -> Path:
    """Write ``metrics`` as the ``metrics.json`` of ``folder`` (numbers as floats)."""
    path = Path(folder) / FILE
    path.write_text(
        json.dumps(of(metrics).model_dump(mode="json", exclude_none=True), indent=2, default=float), encoding="utf-8"
    )
    return path
