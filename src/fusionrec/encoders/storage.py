"""Checkpoints from a local folder or a storage URI, the way KServe's storage initializer hands them over.

In a cluster, KServe downloads ``storageUri`` into ``/mnt/models`` before the container starts, so the
code sees a local folder. Elsewhere a URI is fetched with fsspec into the cache folder once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fusionrec.errors import ConfigError


def resolve_checkpoint(uri: str, cache_dir: str | Path) -> Path:
    """A local folder (or file) holding the checkpoint named by ``uri``.

    Accepts a path, ``file://``, or any fsspec URL whose protocol package is installed
    (``s3://`` needs s3fs, ``gs://`` gcsfs). Never reaches a model hub by name.

    Raises:
        ConfigError: the path does not exist, or the URI's protocol cannot be served here.
    """
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" not in uri:
        path = Path(uri).expanduser()
        if not path.exists():
            raise ConfigError(f"checkpoint {uri!r}: no such file or folder")
        return path
    protocol = uri.split("://", 1)[0]
    if protocol in ("hf", "huggingface"):
        raise ConfigError(
            f"checkpoint {uri!r}: model hubs are not reached at run time; give a local folder or storage URI"
        )
    import fsspec

    target = Path(cache_dir) / "checkpoints" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"checkpoint {uri!r}: protocol {protocol!r} is not available here ({e})") from e
    target.mkdir(parents=True, exist_ok=True)
    fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    (target / ".complete").touch()
    return target
