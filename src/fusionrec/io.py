"""Atomic outputs: a result appears whole or not at all, and a failed run never touches the last good one."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    If the body raises, the temporary folder is removed and ``target`` is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.old-{tag}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log_metrics(artifact, values: dict[str, float]) -> None:
    """Record metrics on a KFP ``Metrics`` artifact (shown in the UI) and write them to its file as JSON.

    The file matters to the KFP local runner: its step cache counts an artifact whose file is missing
    as a miss, and a ``Metrics`` artifact otherwise has no file.
    """
    import json

    for key, value in values.items():
        artifact.log_metric(key, float(value))
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: float(v) for k, v in values.items()}, indent=2), encoding="utf-8")
