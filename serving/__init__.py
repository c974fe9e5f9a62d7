"""The KServe model servers: the predictor and the custom transformer, thin ``kserve.Model`` classes over
the core (``fusionrec.recommender``, ``fusionrec.api.schemas``, ``fusionrec.features.store``).

Run as ``python -m serving.predictor`` and ``python -m serving.transformer`` (what the serving image
and the InferenceService start; ``fusionrec serve`` starts both as local processes).
"""
