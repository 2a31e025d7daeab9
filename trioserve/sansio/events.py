"""The event vocabulary shared by every HTTP version.

A protocol module (HTTP/1.1 today, HTTP/2 later) turns bytes into these events and these
events into bytes; the ASGI layer speaks only in them, so it never learns which HTTP
version carries a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    """A request head. Header names are lowercase; ``raw_headers`` keeps the wire case."""

    method: bytes
    target: bytes
    headers: Headers
    http_version: str
    raw_headers: Headers | None = None
    expects_continue: bool = False
    # HTTP/2 and later: ``:authority`` (also given to the app as ``host``) and the extended
    # CONNECT ``:protocol`` (RFC 8441), which marks a WebSocket over an HTTP/2 stream.
    authority: bytes | None = None
    protocol: bytes | None = None


@dataclass(slots=True)
class Data:
    """A piece of a message body, in either direction."""

    data: bytes


@dataclass(slots=True)
class EndData:
    """The end of a message body (trailers are not supported yet)."""

    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers


@dataclass(slots=True)
class InformationalResponse:
    """A 1xx response, such as ``100 Continue`` (sent lazily on the app's first receive)."""

    status: int
    headers: Headers


class ProtocolError(Exception):
    """An outbound event the protocol cannot frame (wrong order, bad length, bad status).

    Raised by a protocol's ``send()`` before any byte of the event is produced, so the
    trio layer can still answer 500. Our own type, so the trio layer imports no parser.
    """


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed its side; no more events will come."""


@dataclass(slots=True)
class StreamReset:
    """One multiplexed stream was reset (HTTP/2 RST_STREAM): its request is over, the
    connection is not. ``remote`` is False when we reset it (the peer misbehaved)."""

    error_code: int
    remote: bool = True


@dataclass(slots=True)
class BadRequest:
    """The peer sent something we refuse. ``status`` is the answer to give, then close."""

    status: int
    reason: str
    quiet: bool = False  # logged at debug only (e.g. CONNECT: any client could flood the log)


class Sentinel:
    """A named marker (NEED_DATA, PAUSED): compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Sentinel("NEED_DATA")
"""More bytes must be received before another event can be produced."""

PAUSED = Sentinel("PAUSED")
"""The next request is buffered but waits until the current response is complete."""

InboundEvent = Request | Data | EndData | ConnectionClosed | StreamReset | BadRequest | Sentinel
OutboundEvent = Response | InformationalResponse | Data | EndData
