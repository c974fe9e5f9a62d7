"""The one training request: every parameter of a run with its default, written once.

The CLI (``fusionrec train --spec``), the pipeline (:class:`pipelines.training.TrainingRun` carries it), the
TrainJob (as JSON), the retrainer and the schedule all pass a :class:`TrainSpec` whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusionrec.config import describe_pydantic_errors
from fusionrec.errors import ConfigError

PROTOCOLS = ("random", "temporal", "cold_item", "given")
BASELINES = ("mostpop", "bpr_mf", "cornac_bpr", "ease", "content_knn")  # what a run's evaluate step compares with
MARGIN = 0.01  # the gate's default: promote only when the primary metric beats the champion's by this share


class TrainSpec(BaseModel):
    """What to train: the split and the model's shape. Checked where it enters (CLI, pipeline compile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["random", "temporal", "cold_item", "given"] = "random"
    seed: int = 0
    modalities: tuple[str, ...] | None = None  # default: every embedded modality
    fusion: Literal["gated", "concat"] = "gated"
    dim: int = Field(64, ge=4)
    epochs: int = Field(40, ge=1)
    ranking_head: bool = False
    softmax: Literal["auto", "full", "sampled"] = "auto"  # see fusionrec.train.loop.TrainConfig.softmax

    @classmethod
    def parse(cls, **values: Any) -> TrainSpec:
        """Build a spec; a bad value raises ConfigError naming the field, the value and what is allowed."""
        if isinstance(values.get("modalities"), str):
            values["modalities"] = tuple(m.strip() for m in values["modalities"].split(",") if m.strip()) or None
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(f"training spec: {describe_pydantic_errors(e)}") from None

    @classmethod
    def from_options(cls, spec: str | None = None, **flags: Any) -> TrainSpec:
        """A spec from a command line: ``spec`` (a JSON object of its fields, or ``@FILE`` holding one) with the
        flags that were given (not None) over it; every default is the model's own, written once above.

        Raises:
            ConfigError: the JSON is not an object of known fields, or a value is out of range.
        """
        values: dict[str, Any] = {}
        if spec:
            try:
                text = Path(spec[1:]).read_text(encoding="utf-8") if spec.startswith("@") else spec
                values = json.loads(text)
            except (OSError, UnicodeDecodeError, ValueError):
                raise ConfigError("--spec: not a JSON object of training fields (or @FILE holding one)") from None
            if not isinstance(values, dict):
                raise ConfigError("--spec: not a JSON object of training fields (or @FILE holding one)")
        return cls.parse(**{**values, **{k: v for k, v in flags.items() if v is not None}})

    def run_id(self, dataset: str, modalities: list[str]) -> str:
        """A name that says what was trained (also the checkpoint folder)."""
        return f"{dataset}-{self.protocol}-s{self.seed}-{self.fusion}-{'_'.join(sorted(modalities))}"
