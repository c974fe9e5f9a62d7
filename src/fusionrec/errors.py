"""The project's one exception root. Each error knows the HTTP status it maps to."""

from __future__ import annotations


class FusionRecError(Exception):
    """Root of every error fusionrec raises on purpose.

    ``http_status`` is what an API answers when this error escapes a request; the CLI prints the
    message on one line and exits with ``exit_code``.
    """

    http_status: int = 500
    exit_code: int = 2


class ConfigError(FusionRecError):
    """A settings or dataset-contract file is missing, malformed or names something unknown."""

    http_status = 400


class DatasetError(FusionRecError):
    """A dataset file is missing, unreadable or holds a value of the wrong type."""

    http_status = 422


class ValidationFailed(FusionRecError):
    """Data validation found more bad records than a check's error budget allows."""

    http_status = 422
    exit_code = 1


class TrainingDiverged(FusionRecError):
    """The loss stopped being a finite number; no artifact is written."""

    exit_code = 1
