"""``--log-level trace``: every ASGI message an app receives and sends, logged.

The app is wrapped only when the level is ``trace`` (``serve()`` decides once), so the
ordinary path pays nothing. Bodies are logged as their size, as Uvicorn's message logger
does: a trace log must not become a copy of every upload.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..importer import ASGIApp, Message, Receive, Scope, Send
from ..logs import TRACE, error_log

_BODY_KEYS = ("body", "bytes", "text")


def _loggable(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    for key in _BODY_KEYS:
        value = out.get(key)
        if isinstance(value, (bytes, bytearray, str)):
            out[key] = f"<{len(value)} {'chars' if isinstance(value, str) else 'bytes'}>"
    if "headers" in out:
        out["headers"] = "<...>"
    return out


def _scope_text(scope: Scope) -> dict[str, Any]:
    keep = ("type", "http_version", "method", "scheme", "path", "query_string", "client")
    return {key: scope[key] for key in keep if key in scope}


def trace_asgi(app: ASGIApp) -> ASGIApp:
    """``app`` with its ASGI traffic logged at TRACE on ``trioserve.error``, numbered per call."""
    counter = itertools.count(1)

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        number = next(counter)
        error_log.log(TRACE, "ASGI [%d] Started scope=%s", number, _scope_text(scope))

        async def traced_receive() -> Message:
            message = await receive()
            error_log.log(TRACE, "ASGI [%d] Receive %s", number, _loggable(message))
            return message

        async def traced_send(message: Message) -> None:
            error_log.log(TRACE, "ASGI [%d] Send %s", number, _loggable(message))
            await send(message)

        try:
            await app(scope, traced_receive, traced_send)
        except BaseException as exc:
            error_log.log(TRACE, "ASGI [%d] Raised %s", number, type(exc).__name__)
            raise
        error_log.log(TRACE, "ASGI [%d] Completed", number)

    return traced
