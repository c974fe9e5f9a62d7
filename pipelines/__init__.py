"""KFP pipeline definitions: the training pipeline (and, later, the monitoring pipeline)."""
