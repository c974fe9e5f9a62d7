"""The fusion model: modality projections, gated fusion, item and user towers, retrieval and ranking."""

from fusionrec.model.config import FusionConfig
from fusionrec.model.modeling import FusionRecModel

__all__ = ["FusionConfig", "FusionRecModel"]
