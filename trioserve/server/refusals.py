"""The answers the server gives in place of the app's: a tiny app for the gates' refusals
(so they take the normal response path, counted and logged like any response), and a
stream's short refusal (HTTP/2, HTTP/3)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from ..errors import ClientDisconnected
from ..logs import error_log
from ..sansio.events import Data, EndData, OutboundEvent, Response
from ..sansio.headers import plain_error
from .state import ServerState
from .transport import ConnectionInfo


class Answers(Protocol):
    """The part of a ``RequestPort`` a refusal writes through."""

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]: ...


_REFUSAL_BODIES = {
    404: b"Not Found\n",
    413: b"Payload Too Large\n",
    503: b"Service Unavailable\n",
}


def refusal_app(status: int) -> Any:
    """A tiny ASGI app that answers ``status``: refusals take the normal response path."""
    body = _REFUSAL_BODIES[status]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


async def refuse_stream(
    port: Answers,
    info: ConnectionInfo,
    state: ServerState,
    status: int,
    reason: str | None,
    answered: bool,
) -> None:
    """``RequestPort.refuse`` for one stream of a multiplexed connection (HTTP/2, HTTP/3):
    one log line, then a short plain-text answer unless the stream is gone or answered."""
    if reason is not None:
        error_log.info("%s %s: %s", info.client_text, status, reason)
    if answered:
        return
    headers, body = plain_error(status, state.default_headers())
    try:
        await port.send_events([Response(status, headers), Data(body), EndData()])
    except ClientDisconnected:
        pass
