"""fusionrec: a multimodal-fusion recommender run as an MLOps platform."""

__version__ = "0.1.0"
