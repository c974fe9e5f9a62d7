"""The embedding cache: vectors keyed by (encoder identity, content hash), in one SQLite file.

Re-encoding unchanged content costs a lookup; a changed encoder (another identity) or changed content
(another hash) misses, so exactly what changed is recomputed. SQLite gives atomic writes and safe
concurrent readers without a server.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """A persistent map (identity, key) -> float32 vector."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (identity TEXT NOT NULL, key TEXT NOT NULL, "
            "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (identity, key))"
        )

    def get_many(self, identity: str, keys: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim], found [n] bool) for the given keys."""
        values = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        position: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            position.setdefault(k, []).append(i)
        unique = list(position)
        for s in range(0, len(unique), 500):
            chunk = unique[s : s + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, dim, vector FROM embeddings WHERE identity = ? AND key IN ({marks})", [identity, *chunk]
            )
            for key, d, blob in rows:
                if d != dim:
                    continue
                vec = np.frombuffer(blob, dtype=np.float32)
                for i in position[key]:
                    values[i] = vec
                    found[i] = True
        return values, found

    def put_many(self, identity: str, keys: list[str], values: np.ndarray) -> None:
        """Store vectors (one transaction)."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (identity, key, dim, vector) VALUES (?, ?, ?, ?)",
                [(identity, k, values.shape[1], values[i].tobytes()) for i, k in enumerate(keys)],
            )

    def count(self, identity: str | None = None) -> int:
        """Vectors stored (for one identity, or all)."""
        if identity is None:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity = ?", [identity]).fetchone()[0]

    def close(self) -> None:
        self._db.close()
