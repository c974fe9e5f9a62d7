"""KServe adapters: the predictor and the transformer model servers, their wire schemas, running them
locally, and deploying them as an InferenceService. Scoring itself lives in :mod:`fusionrec.recommender`."""
