"""The project's one exception root. Each error knows the HTTP status it maps to."""

from __future__ import annotations


class FusionRecError(Exception):
    """Root of every error fusionrec raises on purpose.

    ``http_status`` is what an API answers when this error escapes a request; the CLI prints the
    message on one line and exits with ``exit_code``.
    """

    http_status: int = 500
    exit_code: int = 2
    retry_after: int | None = None  # seconds; an API answer carries it as the Retry-After header


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


class BadRequest(FusionRecError):
    """A request that does not fit its schema or its limits (malformed, wrong type, out of range)."""

    http_status = 400


class NotFound(FusionRecError):
    """A request names a user or an item the model does not know."""

    http_status = 404


class Unauthorized(FusionRecError):
    """A request without a valid caller identity (no API key, an unknown key, no authenticated principal)."""

    http_status = 401


class Forbidden(FusionRecError):
    """A caller asked for something it is not allowed to (another user's recommendations, say)."""

    http_status = 403


class TooManyRequests(FusionRecError):
    """A caller is over its rate limit, or the server's admission queue is full; retry after a while."""

    http_status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(FusionRecError):
    """A request part (an image, a text, a list) is over its configured limit."""

    http_status = 413


class Unavailable(FusionRecError):
    """A service this one depends on (the predictor) does not answer, or this one is not ready; retry later."""

    http_status = 503
    retry_after = 1


class UpstreamError(FusionRecError):
    """An error answered by a model server (the predictor, to the transformer; either, to a client), passed on
    with its status and message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
