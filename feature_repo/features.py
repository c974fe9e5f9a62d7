"""Feast repository entry for the Feast CLI (``feast -c feature_repo plan|apply``).

The definitions live in the core package (fusionrec.features.definitions) because the embedding views
depend on the dataset's modalities; this file declares them for the feature tables named by the
``FUSIONREC_FEATURE_DATA`` folder (default: the MovieLens feature folder ``make run`` writes).
fusionrec's own commands do not import this file: ``fusionrec features apply`` calls the same function.
"""

from fusionrec.config import load_settings
from fusionrec.features.store import definitions_for

globals().update(definitions_for(load_settings().features.data_dir))
