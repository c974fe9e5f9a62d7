"""Readers: a dataset contract in, raw tables with role-named columns out.

Columns keep the values as read (strings for CSV); types are checked by validation and coerced by
``fusionrec.data.dataset.normalise``. Every table gets ``_line``, the record's line in its file, so a
report can point at it, and ``_row``, its position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fusionrec.data.contract import DatasetContract, ModalitySpec
from fusionrec.errors import DatasetError

LINE = "_line"  # the record's line in its file (1-based, header counted), for reports
ROW = "_row"  # the record's position in its file (0-based), to align row-ordered modality matrices


@dataclass
class RawTables:
    """A dataset as read, before validation. ``items``/``users`` are None when the format has none."""

    contract: DatasetContract
    interactions: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    text_fields: tuple[str, ...] = ()
    side_item: tuple[str, ...] = ()
    side_user: tuple[str, ...] = ()
    # name -> (matrix [rows, dim] float32, item ids aligned with the rows or None for row order)
    modalities: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # table -> file it came from


def _sep_for(path: Path, sep: str | None) -> str:
    if sep is not None:
        return sep
    return "\t" if path.suffix in (".inter", ".tsv", ".tab") else ","


def read_table(path: Path, sep: str | None = None, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet table, keep the needed columns, renamed to their roles.

    Args:
        path: the file; ``.parquet``/``.pq`` is read as Parquet, anything else as delimited text.
        sep: the delimiter for text files (default by suffix: tab for .inter/.tsv, else comma).
        columns: role (new name) -> column in the file; ``None`` keeps every column as is.

    Raises:
        DatasetError: the file is missing, unreadable, or lacks a named column.
    """
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    try:
        if path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            header_lines = 0
        else:
            df = pd.read_csv(
                path, sep=_sep_for(path, sep), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8"
            )
            header_lines = 1
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"{path}: cannot read table: {first}") from e
    if columns is not None:
        missing = [f"{col!r} (role {role})" for role, col in columns.items() if col not in df.columns]
        if missing:
            raise DatasetError(f"{path}: column {', '.join(missing)} not found; the file has {list(df.columns)[:30]}")
        df = pd.DataFrame({role: df[col] for role, col in columns.items()})
    df[ROW] = np.arange(len(df), dtype=np.int64)
    df[LINE] = df[ROW] + 1 + header_lines
    return df.reset_index(drop=True)


def _read_modality(contract: DatasetContract, spec: ModalitySpec) -> tuple[np.ndarray, np.ndarray | None]:
    path = contract.resolve(spec.path)
    if not path.exists():
        raise DatasetError(f"{path}: modality {spec.name!r}: file not found")
    ids: np.ndarray | None = None
    try:
        if path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        elif path.suffix in (".parquet", ".pq"):
            if not spec.id_column:
                raise DatasetError(f"{path}: modality {spec.name!r}: a Parquet modality needs id_column")
            table = pd.read_parquet(path, columns=[spec.id_column, spec.vector_column])
            matrix = np.stack(table[spec.vector_column].to_numpy()) if len(table) else np.zeros((0, 0))
            ids = table[spec.id_column].astype(str).to_numpy()
        else:
            raise DatasetError(f"{path}: modality {spec.name!r}: expected a .npy or .parquet file")
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: modality {spec.name!r}: cannot read: {e}") from e
    if matrix.ndim != 2:
        raise DatasetError(f"{path}: modality {spec.name!r}: expected a 2-d matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number):
        raise DatasetError(f"{path}: modality {spec.name!r}: expected numbers, got dtype {matrix.dtype}")
    if spec.dim is not None and matrix.shape[1] != spec.dim:
        raise DatasetError(
            f"{path}: modality {spec.name!r}: matrix has shape {matrix.shape}, "
            f"expected {spec.dim} columns as the contract says"
        )
    if spec.ids_path:
        ids_file = contract.resolve(spec.ids_path)
        if not ids_file.exists():
            raise DatasetError(f"{ids_file}: modality {spec.name!r}: ids file not found")
        ids = np.array([s.strip() for s in ids_file.read_text(encoding="utf-8").splitlines() if s.strip()])
    if ids is not None and len(ids) != matrix.shape[0]:
        raise DatasetError(f"{path}: modality {spec.name!r}: matrix has {matrix.shape[0]} rows but {len(ids)} item ids")
    return matrix.astype(np.float32, copy=False), ids


def read_raw(contract: DatasetContract) -> RawTables:
    """Read every table and modality file a contract names, columns renamed to their roles.

    Raises:
        DatasetError: a file is missing or unreadable, or a named column is absent.
    """
    ispec = contract.interactions
    roles = {k: v for k, v in ispec.roles.model_dump().items() if v is not None}
    inter_path = contract.resolve(ispec.path)
    interactions = read_table(inter_path, ispec.sep, roles)
    files = {"interactions": str(inter_path)}

    items = users = None
    text_fields: tuple[str, ...] = ()
    side_item: tuple[str, ...] = ()
    side_user: tuple[str, ...] = ()
    if contract.items is not None:
        r = contract.items.roles
        cols = {"item_id": r.item_id}
        if r.title:
            cols["title"] = r.title
        for f in (*r.text, *r.side_features):
            if f not in cols:
                cols[f] = f
        if r.image:
            cols["image"] = r.image
        path = contract.resolve(contract.items.path)
        items = read_table(path, contract.items.sep, cols)
        if contract.items.image_template:
            template = contract.items.image_template
            items["image"] = [template.format(item_id=i) for i in items["item_id"].astype(str)]
        text_fields = tuple("title" if f == r.title else f for f in r.text)
        side_item = tuple(r.side_features)
        files["items"] = str(path)
    if contract.users is not None:
        r = contract.users.roles
        cols = {"user_id": r.user_id, **{f: f for f in r.side_features if f != r.user_id}}
        path = contract.resolve(contract.users.path)
        users = read_table(path, contract.users.sep, cols)
        side_user = tuple(r.side_features)
        files["users"] = str(path)

    modalities = {m.name: _read_modality(contract, m) for m in contract.modalities}
    for m in contract.modalities:
        matrix, ids = modalities[m.name]
        if ids is None and items is not None and matrix.shape[0] != len(items):
            raise DatasetError(
                f"{contract.resolve(m.path)}: modality {m.name!r}: matrix has shape {matrix.shape} but the items "
                f"table {contract.resolve(contract.items.path)} has {len(items)} rows; expected shape "
                f"({len(items)}, {matrix.shape[1]}) (or give ids_path to align rows by item id)"
            )
    for m in contract.modalities:
        files[f"modality:{m.name}"] = str(contract.resolve(m.path))
    return RawTables(contract, interactions, items, users, text_fields, side_item, side_user, modalities, files)
