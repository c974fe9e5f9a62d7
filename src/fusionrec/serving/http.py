"""What both model servers share on the HTTP side: errors as a status and ``{"error": message}``."""

from __future__ import annotations


def install_error_handlers() -> None:
    """Answer every :class:`FusionRecError` with its status and ``{"error": message}`` (KServe's app)."""
    from fastapi.responses import JSONResponse
    from kserve.model_server import app

    from fusionrec.errors import FusionRecError

    async def handler(_, exc: FusionRecError):
        return JSONResponse(status_code=exc.http_status, content={"error": str(exc)})

    app.add_exception_handler(FusionRecError, handler)


def error_message(response) -> str:
    """The message of an error answer (``{"error": ...}``), or its raw text."""
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text
