"""Atomic outputs: a result appears whole or not at all, and a failed run never touches the last good one."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: str | Path, *, keep: str | Path | None = None) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    If the body raises, the temporary folder is removed and ``target`` is left exactly as it was. With
    ``keep``, the folder it replaced is moved there (whatever was there first is removed) instead of deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)  # the files' data reach the disk before the rename publishes them
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(keep) if keep is not None else target.parent / f".{target.name}.old-{tag}"
        if keep is not None:
            shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        if keep is None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    fsync_dir(target.parent)


@contextmanager
def new_dir(target: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_dir`, for a folder that is made once and never replaced: the rename fails (and
    the temporary folder goes) when ``target`` exists by then.

    Raises:
        FileExistsError: ``target`` exists.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(str(target))
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        # renameat2(RENAME_NOREPLACE) is not in Python; a hard-link-free check under the caller's lock instead
        if target.exists():
            raise FileExistsError(str(target))
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(folder: str | Path) -> None:
    """Make a folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder``, then the folders themselves."""
    for path, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(path, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(path)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``path``, held for the block; other processes wait."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # the data before the rename: never an empty file after a power loss
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_secret_file(path: str | Path, secret: str) -> None:
    """Write ``secret`` to ``path`` once, readable by its owner only; a file already there (another process
    made it first) is left as it is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secret)


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
