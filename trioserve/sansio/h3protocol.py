"""HTTP/3 without I/O: aioquic's events in trioserve's vocabulary, and a stream framer.

aioquic's ``QuicConnection``/``H3Connection`` frame, QPACK-decode and keep the stream state
machines. :class:`H3Protocol` wraps the pair for one connection as
:class:`~.http2.H2Protocol` wraps h2: datagrams and the time go in; out come the same
``(stream id, event)`` pairs (``Request`` or a ``BadRequest`` refusal, ``Data``,
``EndData``, ``StreamReset``) that the shared stream class consumes, plus the connection's
own events (handshake done, connection IDs, its end); and it is the
:class:`~.streams.StreamFramer` the streams frame their responses with. The request rules
(``:authority``, CONNECT, the head size limit) are :func:`~.streams.request_from_fields`,
shared with HTTP/2; header sections are bounded by :class:`~.h3limits.LimitedH3Connection`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aioquic.h3.connection import ErrorCode, H3Connection
from aioquic.h3.connection import ProtocolError as H3ProtocolError
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events

from .events import (
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    Headers,
    ProtocolError,
    Request,
    StreamReset,
)
from .h3limits import HeadersRefused, LimitedH3Connection
from .http3 import quic_tls_extension, response_fields, trailer_fields
from .quic import BoundedQuicConnection
from .streams import request_from_fields

__all__ = ["CONNECTION", "CidIssued", "CidRetired", "Established", "H3Event", "H3Protocol"]

_INFINITE_WINDOW = 1 << 62


@dataclass(slots=True)
class Established:
    """The handshake finished: the connection no longer counts as half-open."""


@dataclass(slots=True)
class CidIssued:
    """A connection ID the router must send to this connection from now on."""

    cid: bytes


@dataclass(slots=True)
class CidRetired:
    """A connection ID the router must forget."""

    cid: bytes


H3Event = tuple[
    int,
    Request
    | BadRequest
    | Data
    | EndData
    | StreamReset
    | ConnectionClosed
    | Established
    | CidIssued
    | CidRetired,
]
CONNECTION = -1  # the stream id of a connection-level event


@dataclass(slots=True)
class _Stream:
    request_done: bool = False
    reset: bool = False


class H3Protocol:
    """One HTTP/3 server connection; see the module docstring. ``stream_buffer`` bounds what
    one stream may have framed and unsent (``h3_stream_buffer_size``); ``strip`` lists
    default response fields not to send on HTTP/3 (the Alt-Svc that advertises it)."""

    def __init__(
        self,
        quic: BoundedQuicConnection,
        *,
        max_field_section_size: int,
        max_streams: int,
        stream_buffer: int,
        strip: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        self.quic = quic
        self.h3: LimitedH3Connection | None = None
        self.max_field_section_size = max_field_section_size
        self.max_streams = max_streams
        self.stream_buffer = stream_buffer
        self.strip = frozenset(strip)
        self.streams: dict[int, _Stream] = {}  # requests whose handler runs
        self.established = False
        self.terminated = False
        self.closing = False  # GOAWAY sent: no new streams, close when idle
        self.closed = False  # CONNECTION_CLOSE queued
        self.highest_stream = -4  # the last request stream id taken (GOAWAY names the next)

    # -- inbound -----------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.quic.receive_datagram(data, addr, now)

    def timer(self) -> float | None:
        """When :meth:`events` must run next even if no datagram comes (loss detection,
        pacing, the idle timeout)."""
        return self.quic.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Datagrams to send now, with their addresses."""
        return self.quic.datagrams_to_send(now)

    def stop(self) -> None:
        """The server stops without waiting: CONNECTION_CLOSE now (send what follows)."""
        if not self.terminated:
            self.quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="server stopped")

    def tls_extension(self, server_cert: str | None) -> dict[str, Any]:
        return quic_tls_extension(self.quic, server_cert)

    def events(self, now: float) -> list[H3Event]:
        """Run aioquic's timer if it is due, then translate every pending event."""
        quic = self.quic
        timer = quic.get_timer()
        if timer is not None and timer <= now:
            quic.handle_timer(now)
        out: list[H3Event] = []
        while (event := quic.next_event()) is not None:
            self._quic_event(event, out)
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    self._h3_event(h3_event, out)
        if self.closing and not self.closed:
            self.maybe_close()  # acknowledgements may have just arrived
        return out

    def _quic_event(self, event: quic_events.QuicEvent, out: list[H3Event]) -> None:
        kind = type(event)
        if kind is quic_events.ProtocolNegotiated:
            self.h3 = LimitedH3Connection(
                self.quic, max_field_section_size=self.max_field_section_size
            )
        elif kind is quic_events.HandshakeCompleted:
            self.established = True
            out.append((CONNECTION, Established()))
            if self.closing and self.h3 is not None:
                self.h3.send_goaway(0)
                self.maybe_close()
        elif kind is quic_events.ConnectionIdIssued:
            out.append((CONNECTION, CidIssued(event.connection_id)))  # type: ignore[attr-defined]
        elif kind is quic_events.ConnectionIdRetired:
            out.append((CONNECTION, CidRetired(event.connection_id)))  # type: ignore[attr-defined]
        elif kind is quic_events.ConnectionTerminated:
            self.terminated = True
            out.append((CONNECTION, ConnectionClosed()))
        elif kind is quic_events.StreamReset or kind is quic_events.StopSendingReceived:
            self._peer_reset(event.stream_id, out)  # type: ignore[attr-defined]

    def _peer_reset(
        self, stream_id: int, out: list[H3Event], code: int = ErrorCode.H3_REQUEST_CANCELLED
    ) -> None:
        """The client reset or stopped the stream, or sent trailers we refuse: both
        directions end (nothing more goes out whatever the app does, and the client stops
        a body nobody will read)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset:
            return
        stream.reset = True
        self.quic.reset_stream(stream_id, code)
        if not stream.request_done:
            self.quic.stop_receiving(stream_id, code)
        out.append((stream_id, StreamReset(code)))

    def _h3_event(self, event: Any, out: list[H3Event]) -> None:
        kind = type(event)
        if kind is HeadersRefused:
            # A section over h3_max_field_section_size, refused undecoded: a head is
            # answered 431, trailers end the request (the app sees http.disconnect), as
            # malformed trailers do (RFC 9114 4.1.2: H3_MESSAGE_ERROR).
            if event.stream_id in self.streams:
                code = ErrorCode.H3_MESSAGE_ERROR if event.malformed else None
                self._peer_reset(event.stream_id, out, code or ErrorCode.H3_REQUEST_CANCELLED)
            elif not event.trailers:
                self._new_request(event, out)
            return
        if kind is not DataReceived and kind is not HeadersReceived:
            return
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        if stream is None:
            if kind is HeadersReceived:
                self._new_request(event, out)
            return
        if stream.reset:
            return  # nobody will read it; the client was asked to stop sending
        if kind is DataReceived and event.data:
            self.quic.received(stream_id, len(event.data))
            out.append((stream_id, Data(event.data)))
        # (Request trailers are not passed on: ASGI has none.)
        if event.stream_ended:
            stream.request_done = True
            out.append((stream_id, EndData()))

    def _new_request(self, event: HeadersReceived | HeadersRefused, out: list[H3Event]) -> None:
        stream_id = event.stream_id
        quic = self.quic
        self.highest_stream = max(self.highest_stream, stream_id)
        if self.closing or len(self.streams) >= self.max_streams:
            # Over the limit only while reset streams' tasks finish their grace period.
            quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            quic.stop_receiving(stream_id, ErrorCode.H3_REQUEST_REJECTED)
            return
        ended = False
        request: Request | BadRequest
        if type(event) is HeadersReceived:
            ended = event.stream_ended
            request = request_from_fields(event.headers, "3", max_size=self.max_field_section_size)
        else:
            request = BadRequest(431, "request head over h3_max_field_section_size")
        self.streams[stream_id] = _Stream(request_done=ended)
        quic.start(stream_id)
        out.append((stream_id, request))
        if ended:
            out.append((stream_id, EndData()))

    # -- StreamFramer ------------------------------------------------------------------------
    def send_headers(self, stream_id: int, status: int, headers: Headers, end: bool) -> None:
        if self.strip:
            headers = [h for h in headers if h[0] != b"alt-svc" or h not in self.strip]
        self._frame(self._h3().send_headers, stream_id, response_fields(status, headers), end)

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        self._frame(self._h3().send_data, stream_id, data, end)

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        self._frame(self._h3().send_headers, stream_id, trailer_fields(headers), True)

    def _h3(self) -> H3Connection:
        h3 = self.h3
        if h3 is None:  # pragma: no cover - streams exist only once HTTP/3 runs
            raise ProtocolError("HTTP/3 is not negotiated")
        return h3

    @staticmethod
    def _frame(send: Any, stream_id: int, payload: Any, end: bool) -> None:
        try:
            send(stream_id, payload, end)
        except H3ProtocolError as exc:  # a wrong event order aioquic refuses to frame
            raise ProtocolError(str(exc)) from None

    def send_window(self, stream_id: int) -> int:
        """No flow control to wait for here (aioquic buffers): a stream frames while less
        than ``stream_buffer`` bytes of it wait unsent, so that much bounds its memory."""
        if not self.is_open(stream_id):
            return 0
        if self.quic.send_backlog(stream_id) > self.stream_buffer:
            return 0
        return _INFINITE_WINDOW

    def is_open(self, stream_id: int) -> bool:
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset or self.terminated:
            return False
        return self.quic.can_send(stream_id)

    def end_stream(self, stream_id: int) -> bool:
        if not self.is_open(stream_id):
            return False
        self.send_data(stream_id, b"", True)
        return True

    def reset(self, stream_id: int, now: float) -> None:
        """H3_INTERNAL_ERROR both ways: the response cannot be completed."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.reset or self.terminated:
            return
        stream.reset = True
        self.quic.reset_stream(stream_id, ErrorCode.H3_INTERNAL_ERROR)
        if not stream.request_done:
            self.quic.stop_receiving(stream_id, ErrorCode.H3_INTERNAL_ERROR)

    def consumed(self, stream_id: int, size: int) -> bool:
        self.quic.consumed(stream_id, size)
        return True  # the window may have opened: the flush sends MAX_STREAM_DATA

    # -- the connection ----------------------------------------------------------------------
    def stream_finished(self, stream_id: int) -> None:
        """A stream's handler ended: free its slot, and stop reading a body nobody wants."""
        stream = self.streams.pop(stream_id, None)
        self.quic.forget(stream_id)
        done = stream is None or stream.request_done or stream.reset
        if not done and not self.terminated:
            # RFC 9114 4.1.1: after a complete response, ask the client to stop its body.
            self.quic.stop_receiving(stream_id, ErrorCode.H3_NO_ERROR)
        self.maybe_close()

    def goaway(self) -> None:
        """H3 GOAWAY naming the first stream not taken; close once the last stream ends."""
        if self.closing:
            return
        self.closing = True
        if self.h3 is not None and not self.terminated:
            self.h3.send_goaway(self.highest_stream + 4)
        self.maybe_close()

    def maybe_close(self) -> None:
        """Shutting down: close once no stream runs and every response was delivered."""
        quic = self.quic
        if (
            self.closing
            and not self.closed
            and not self.streams
            and not self.terminated
            and quic.responses_delivered()
        ):
            self.closed = True
            quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="shutting down")
