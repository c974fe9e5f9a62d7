"""Feast repository entry for the Feast CLI: ``cd feature_repo && feast plan`` (or ``feast apply``).

The definitions live in the core package (fusionrec.features.definitions) because the embedding views
depend on the dataset's modalities; this file declares them for the feature tables in the settings'
``features.data_dir`` (relative to the repository root; override with FUSIONREC__FEATURES__DATA_DIR).
fusionrec's own commands do not import this file: ``fusionrec features apply`` calls the same function.
"""

from pathlib import Path

from fusionrec.config import load_settings
from fusionrec.features.store import definitions_for

_ROOT = Path(__file__).resolve().parents[1]
_DATA = Path(load_settings(_ROOT / "configs" / "settings.yaml").features.data_dir)
globals().update(definitions_for(_DATA if _DATA.is_absolute() else _ROOT / _DATA))
