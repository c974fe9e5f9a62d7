"""Monitoring entry points: the ``fusionrec monitor`` commands and the inference-log sink service."""
