"""The dataset contract: a YAML file that maps a dataset's columns to roles.

Two formats share one contract shape:

* ``raw_catalogue``: interaction, item and user tables (CSV or Parquet) plus image files;
* ``mmrec``: the MMRec exchange format, a ``*.inter`` file (userID, itemID, x_label) plus one ``.npy``
  feature matrix per modality, row i belonging to itemID i.

Relative paths resolve against ``root``, which itself resolves against the contract file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from fusionrec.config import describe_pydantic_error, read_yaml
from fusionrec.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InteractionRoles(_Strict):
    """Columns of the interactions table, by role."""

    user_id: str
    item_id: str
    timestamp: str | None = None
    rating: str | None = None  # explicit rating; becomes the label through `implicit`
    label: str | None = None  # an implicit 0/1 label given as is
    split: str | None = None  # a split the dataset carries (MMRec x_label: 0 train, 1 valid, 2 test)


class ImplicitPolicy(_Strict):
    """How explicit ratings become implicit interactions."""

    # Ratings >= min_rating become positives; null keeps every rating as a positive.
    min_rating: float | None = None


class InteractionsSpec(_Strict):
    path: str
    roles: InteractionRoles
    sep: str | None = None  # CSV separator; None sniffs by suffix (.inter and .tsv: tab)
    timestamp_unit: Literal["s", "ms", "iso"] = "s"
    rating_range: tuple[float, float] | None = None
    implicit: ImplicitPolicy = ImplicitPolicy()


class ItemRoles(_Strict):
    item_id: str
    title: str | None = None  # shown to users; embedded with the text fields when listed there too
    text: tuple[str, ...] = ()  # free-text fields to embed, joined in this order
    image: str | None = None  # a column with an image path (relative to root) or a URI
    side_features: tuple[str, ...] = ()


class ItemsSpec(_Strict):
    path: str
    roles: ItemRoles
    sep: str | None = None
    # When the table has no image column: a path template, e.g. "posters/{item_id}.jpg".
    image_template: str | None = None

    @model_validator(mode="after")
    def _one_image_source(self) -> ItemsSpec:
        if self.roles.image and self.image_template:
            raise ValueError("give either roles.image or image_template, not both")
        return self


class UserRoles(_Strict):
    user_id: str
    side_features: tuple[str, ...] = ()


class UsersSpec(_Strict):
    path: str
    roles: UserRoles
    sep: str | None = None


class ModalitySpec(_Strict):
    """A precomputed modality: one vector per item (e.g. audio), as .npy or Parquet."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    path: str
    # .npy without ids: row i belongs to the i-th item of the items table (MMRec: to itemID i).
    ids_path: str | None = None  # optional text file, one item id per line, aligned with the rows
    id_column: str | None = None  # Parquet: the item id column; the vector is in `vector_column`
    vector_column: str = "vector"
    dim: int | None = Field(None, ge=1)  # when given, the matrix must have exactly this many columns


class CheckOverride(_Strict):
    """Per-check policy: the error budget (share of records allowed to fail) and an off switch."""

    budget: float | None = Field(None, ge=0.0, le=1.0)
    enabled: bool = True


class DatasetContract(_Strict):
    """A dataset, described: where its files are and what each column means."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    format: Literal["raw_catalogue", "mmrec"]
    root: str = "."
    interactions: InteractionsSpec
    items: ItemsSpec | None = None
    users: UsersSpec | None = None
    modalities: tuple[ModalitySpec, ...] = ()
    checks: dict[str, CheckOverride] = {}
    description: str = ""

    # Set by load_contract: the folder that relative paths resolve against.
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _format_rules(self) -> DatasetContract:
        if self.format == "raw_catalogue" and self.items is None:
            raise ValueError("a raw_catalogue dataset needs an 'items' table")
        if self.format == "mmrec" and not self.modalities:
            raise ValueError("an mmrec dataset needs at least one modality (.npy per modality)")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if self.items is not None:
            builtin = {"text"} if self.items.roles.text else set()
            if self.items.roles.image or self.items.image_template:
                builtin.add("image")
            clash = builtin & set(names)
            if clash:
                raise ValueError(f"precomputed modality {sorted(clash)} clashes with the items' own columns")
        return self

    @property
    def modality_names(self) -> list[str]:
        """The modalities this dataset can be embedded in: text, image, tabular (own columns; tabular: the
        items' side features), then precomputed ones."""
        own = []
        if self.items is not None:
            own += ["text"] if self.items.roles.text else []
            own += ["image"] if (self.items.roles.image or self.items.image_template) else []
            own += (
                ["tabular"]
                if self.items.roles.side_features and "tabular" not in {m.name for m in self.modalities}
                else []
            )
        return own + sorted(m.name for m in self.modalities)

    def resolve(self, relative: str) -> Path:
        """An absolute path for a file named in the contract (URIs are returned unchanged)."""
        if "://" in relative:
            return Path(relative)
        p = Path(relative)
        return p if p.is_absolute() else (self.root_dir / p)

    @property
    def root_dir(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else (self._base_dir / root).resolve()


def load_contract(path: str | Path) -> DatasetContract:
    """Read and check a dataset contract YAML.

    Raises:
        ConfigError: the file is missing or malformed, or names an unknown role, key or format.
    """
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a dataset contract must be a mapping, got {type(raw).__name__}")
    try:
        contract = DatasetContract.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(describe_pydantic_error(str(path), e)) from e
    contract._base_dir = path.resolve().parent
    return contract
