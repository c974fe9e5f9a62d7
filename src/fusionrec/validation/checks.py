"""The checks: what a valid dataset looks like, table by table.

Each check is a Great Expectations expectation over a table, an error budget (the share of records
allowed to fail it) and an action for the records that do: ``drop`` (the record goes to quarantine and
leaves the clean table) or ``mask`` (the record stays; the offending field is nulled, so the modality
it feeds is masked downstream). Content that GX cannot see by itself (does an image decode? does a
value parse as a number?) is first computed into a derived column, which the expectation then checks.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from fusionrec.config import ValidationSettings

Action = Literal["drop", "mask"]


@dataclass(frozen=True)
class Check:
    """One rule over one table.

    ``expectation`` is ``(GX expectation class name, kwargs)``; ``column`` names the field a reader
    would look at (the raw column, even when the expectation runs on a derived one); ``mask`` lists
    the fields nulled when the action is ``mask``.
    """

    name: str
    table: str
    description: str
    expectation: tuple[str, dict[str, Any]]
    action: Action = "drop"
    budget: float = 0.0
    column: str | None = None
    mask: tuple[str, ...] = ()
    sensitive: bool = False  # the value is free text: reports show its length, never its content

    @property
    def key(self) -> str:
        """Stable name used in reports and in a contract's budget overrides."""
        base = f"{self.table}.{self.name}"
        return f"{base}[{self.column}]" if self.name in PER_COLUMN_CHECKS else base


# Checks that exist once per column (per text field, per side feature): their key carries the column.
PER_COLUMN_CHECKS = {"text_present", "text_length", "modality_finite", "modality_present"}

# Default budgets and actions; a dataset contract overrides a budget by key ("items.item_id_unique")
# or by name for all columns ("items.text_present").
DEFAULT_BUDGETS: dict[str, float] = {
    "user_id_present": 0.0,
    "item_id_present": 0.0,
    "item_id_unique": 0.0,
    "user_id_unique": 0.0,
    "rating_is_number": 0.001,
    "rating_in_range": 0.001,
    "label_is_binary": 0.001,
    "timestamp_parses": 0.001,
    "timestamp_in_range": 0.001,
    "split_is_known": 0.0,
    "user_known": 0.01,
    "item_known": 0.01,
    "interaction_unique": 0.01,
    "text_present": 0.05,
    "text_length": 0.01,
    "image_present": 0.05,
    "image_decodes": 0.01,
    "image_size": 0.01,
    "modality_present": 0.05,
    "modality_finite": 0.01,
}


def _flag(column: str) -> tuple[str, dict[str, Any]]:
    """An expectation that a derived boolean 'bad' column is False everywhere."""
    return ("ExpectColumnValuesToBeInSet", {"column": column, "value_set": [False]})


@dataclass
class Prepared:
    """A table with its derived columns and the checks to run over it."""

    table: str
    frame: pd.DataFrame
    checks: list[Check] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Derived columns


def as_id(series: pd.Series) -> pd.Series:
    """Ids as stripped strings, nulls as None (one representation whatever the file format)."""
    out = series.astype("object").where(series.notna(), None)
    return out.map(
        lambda v: (
            None if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()) or None
        )
    )


def parse_number(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(parsed floats, bad flag): bad where a value is present but is not a finite number."""
    parsed = pd.to_numeric(series, errors="coerce").astype("float64")
    parsed = parsed.where(np.isfinite(parsed))
    bad = series.notna() & parsed.isna()
    return parsed, bad


def parse_timestamp(series: pd.Series, unit: str) -> tuple[pd.Series, pd.Series]:
    """(unix seconds as float, bad flag) for a timestamp column in unit s, ms or iso."""
    if unit == "iso":
        dt = pd.to_datetime(series, errors="coerce", utc=True)
        parsed = (dt - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    else:
        parsed, _ = parse_number(series)
        if unit == "ms":
            parsed = parsed / 1000.0
    bad = series.notna() & parsed.isna()
    return parsed.astype("float64"), bad


def image_status(paths: pd.Series, root: Path, cfg: ValidationSettings, progress: bool = True) -> pd.Series:
    """Probe every image: ok | missing | no_path | too_large | bomb | too_small | undecodable | remote.

    Header dimensions are checked before any pixel is decoded, so a decompression bomb is rejected
    without being expanded. Runs on a small thread pool (PIL releases the GIL while decoding).
    """
    from PIL import Image

    def probe(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "no_path"
        text = str(value)
        if "://" in text:
            return "remote"  # checked by the encoder that fetches it
        path = Path(text)
        path = path if path.is_absolute() else root / path
        try:
            size = path.stat().st_size
        except OSError:
            return "missing"
        if size > cfg.max_image_bytes:
            return "too_large"
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > cfg.max_image_pixels or max(w, h) > cfg.max_image_side:
                    return "bomb"
                if min(w, h) < cfg.min_image_side:
                    return "too_small"
                img.load()
        except Image.DecompressionBombError:
            return "bomb"
        except (OSError, SyntaxError, ValueError):
            return "undecodable"
        return "ok"

    values = list(paths)
    from fusionrec.progress import progress as progress_bar

    with ThreadPoolExecutor(max_workers=4) as pool:
        it = pool.map(probe, values, chunksize=64)
        statuses = list(progress_bar(it, total=len(values), desc="images", unit="img", enabled=progress))
    return pd.Series(statuses, index=paths.index, dtype="object")


# ---------------------------------------------------------------------------------------------------
# Suites


def _dup_keep_first(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    present = frame[cols].notna().all(axis=1)
    return frame.duplicated(subset=cols, keep="first") & present


def _id_checks(f: pd.DataFrame, table: str, entity: str) -> list[Check]:
    """An entity table's id column normalised in ``f``, and its two checks: present, and unique (the first
    record is kept)."""
    column, dup = f"{entity}_id", f"__dup_{entity}"
    f[column] = as_id(f[column])
    f[dup] = _dup_keep_first(f, [column])
    return [
        Check(
            f"{column}_present",
            table,
            f"{entity} id is present",
            ("ExpectColumnValuesToNotBeNull", {"column": column}),
            column=column,
        ),
        Check(
            f"{column}_unique", table, f"{entity} id is unique (the first record is kept)", _flag(dup), column=column
        ),
    ]


def items_checks(
    frame: pd.DataFrame,
    text_fields: tuple[str, ...],
    has_image: bool,
    root: Path,
    cfg: ValidationSettings,
    progress: bool = True,
) -> Prepared:
    """Derive columns and list the checks for the items table."""
    f = frame.copy()
    checks = _id_checks(f, "items", "item")
    for col in text_fields:
        checks.append(
            Check(
                "text_present",
                "items",
                f"text field '{col}' is present",
                ("ExpectColumnValuesToNotBeNull", {"column": col}),
                action="mask",
                column=col,
                mask=(col,),
            )
        )
        checks.append(
            Check(
                "text_length",
                "items",
                f"text field '{col}' has {cfg.min_text_chars}..{cfg.max_text_chars} characters",
                (
                    "ExpectColumnValueLengthsToBeBetween",
                    {"column": col, "min_value": cfg.min_text_chars, "max_value": cfg.max_text_chars},
                ),
                action="mask",
                column=col,
                mask=(col,),
                sensitive=True,
            )
        )
    if has_image:
        f["__image_status"] = image_status(f["image"], root, cfg, progress)
        checks += [
            Check(
                "image_present",
                "items",
                "image file exists",
                ("ExpectColumnValuesToNotBeInSet", {"column": "__image_status", "value_set": ["missing", "no_path"]}),
                action="mask",
                column="image",
                mask=("image",),
            ),
            Check(
                "image_decodes",
                "items",
                "image decodes",
                ("ExpectColumnValuesToNotBeInSet", {"column": "__image_status", "value_set": ["undecodable"]}),
                action="mask",
                column="image",
                mask=("image",),
            ),
            Check(
                "image_size",
                "items",
                f"image within bounds ({cfg.min_image_side}..{cfg.max_image_side} px a side, "
                f"<= {cfg.max_image_pixels:,} px, <= {cfg.max_image_bytes:,} bytes)",
                (
                    "ExpectColumnValuesToNotBeInSet",
                    {"column": "__image_status", "value_set": ["too_large", "bomb", "too_small"]},
                ),
                action="mask",
                column="image",
                mask=("image",),
            ),
        ]
    return Prepared("items", f, checks)


def users_checks(frame: pd.DataFrame) -> Prepared:
    """Derive columns and list the checks for the users table."""
    f = frame.copy()
    checks = _id_checks(f, "users", "user")
    return Prepared("users", f, checks)


def interactions_checks(
    frame: pd.DataFrame,
    *,
    timestamp_unit: str,
    rating_range: tuple[float, float] | None,
    known_users: set[str] | None,
    known_items: set[str] | None,
    cfg: ValidationSettings,
    now: float | None = None,
) -> Prepared:
    """Derive columns and list the checks for the interactions table."""
    f = frame.copy()
    f["user_id"] = as_id(f["user_id"])
    f["item_id"] = as_id(f["item_id"])
    checks = [
        Check(
            "user_id_present",
            "interactions",
            "user id is present",
            ("ExpectColumnValuesToNotBeNull", {"column": "user_id"}),
            column="user_id",
        ),
        Check(
            "item_id_present",
            "interactions",
            "item id is present",
            ("ExpectColumnValuesToNotBeNull", {"column": "item_id"}),
            column="item_id",
        ),
    ]
    if "rating" in f:
        f["__rating"], f["__bad_rating"] = parse_number(f["rating"])
        checks.append(
            Check("rating_is_number", "interactions", "rating is a number", _flag("__bad_rating"), column="rating")
        )
        if rating_range is not None:
            lo, hi = rating_range
            checks.append(
                Check(
                    "rating_in_range",
                    "interactions",
                    f"rating within [{lo:g}, {hi:g}]",
                    ("ExpectColumnValuesToBeBetween", {"column": "__rating", "min_value": lo, "max_value": hi}),
                    column="rating",
                )
            )
    if "label" in f:
        f["__label"], _ = parse_number(f["label"])
        f["__bad_label"] = ~f["__label"].isin([0.0, 1.0])
        checks.append(Check("label_is_binary", "interactions", "label is 0 or 1", _flag("__bad_label"), column="label"))
    if "timestamp" in f:
        f["__ts"], f["__bad_ts"] = parse_timestamp(f["timestamp"], timestamp_unit)
        upper = (time.time() if now is None else now) + cfg.future_tolerance_s
        checks += [
            Check(
                "timestamp_parses",
                "interactions",
                f"timestamp parses (unit {timestamp_unit})",
                _flag("__bad_ts"),
                column="timestamp",
            ),
            Check(
                "timestamp_in_range",
                "interactions",
                f"timestamp not before {pd.Timestamp(cfg.min_timestamp, unit='s').date()} and not in the future",
                (
                    "ExpectColumnValuesToBeBetween",
                    {"column": "__ts", "min_value": float(cfg.min_timestamp), "max_value": upper},
                ),
                column="timestamp",
            ),
        ]
    if "split" in f:
        f["split"] = as_id(f["split"])
        checks.append(
            Check(
                "split_is_known",
                "interactions",
                "split is 0 (train), 1 (valid) or 2 (test)",
                ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["0", "1", "2"]}),
                column="split",
            )
        )
    if known_users is not None:
        checks.append(
            Check(
                "user_known",
                "interactions",
                "user exists in the users table",
                ("ExpectColumnValuesToBeInSet", {"column": "user_id", "value_set": sorted(known_users)}),
                column="user_id",
            )
        )
    if known_items is not None:
        checks.append(
            Check(
                "item_known",
                "interactions",
                "item exists in the catalogue",
                ("ExpectColumnValuesToBeInSet", {"column": "item_id", "value_set": sorted(known_items)}),
                column="item_id",
            )
        )
    keys = ["user_id", "item_id"] + (["timestamp"] if "timestamp" in f else [])
    f["__dup_inter"] = _dup_keep_first(f, keys)
    checks.append(
        Check(
            "interaction_unique",
            "interactions",
            f"no repeated ({', '.join(keys)}) record (the first is kept)",
            _flag("__dup_inter"),
            column="item_id",
        )
    )
    return Prepared("interactions", f, checks)


def modality_checks(name: str, matrix: np.ndarray, item_ids: list[str]) -> Prepared:
    """Rows of a precomputed modality that are not finite get the modality masked for that item."""
    finite = np.isfinite(matrix).all(axis=1) if matrix.size else np.ones(len(matrix), dtype=bool)
    f = pd.DataFrame({"item_id": item_ids, "__bad_vector": ~finite, "_line": np.arange(len(matrix)) + 1})
    check = Check(
        "modality_finite",
        f"modality:{name}",
        f"'{name}' vector is finite",
        _flag("__bad_vector"),
        action="mask",
        column=name,
        mask=(name,),
    )
    return Prepared(f"modality:{name}", f, [check])
