"""HTTP/2 over h2, in trioserve's event vocabulary, with the limits h2 leaves to servers.

h2 keeps the frame and stream state machines. This module adds what a server exposed to
the internet needs on top (each is a known way to take down HTTP/2 servers):

- concurrency counts *running handlers*, reset ones included, not open streams; a stream
  over the limit gets RST_STREAM REFUSED_STREAM, never a connection error (h2 would end
  the whole connection, so h2 is told a limit it never reaches and we enforce ours);
- resets, by the client and by us, share one rate budget (rapid reset, CVE-2023-44487;
  MadeYouReset, CVE-2025-8671), and frames that make no progress (PING, SETTINGS,
  PRIORITY, WINDOW_UPDATE, empty DATA or CONTINUATION) another, and DATA frames far smaller
  than a full one (h2limits.small_data_cost) a third; over any, GOAWAY ENHANCE_YOUR_CALM;
- header blocks are bounded while they arrive (CONTINUATION floods) and once decoded
  (HPACK bombs: the advertised header list size is enforced by the decoder);
- received DATA is acknowledged (WINDOW_UPDATE) only as the app consumes it, so a stream's
  buffer is bounded by its window; padding and data nobody will read are acknowledged
  at once;
- a graceful GOAWAY that keeps in-flight streams working (h2's own GOAWAY ends them).

Where h2's pure Python is most of a request's cost, it is worked around, never skipped:
HPACK with cacheable blocks and h2's settings in less memory (:mod:`.h2lean`), and DATA
framed in batches whose middle frames are framed here (:meth:`H2Protocol.send_data`).

Nothing here does I/O or reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack.exceptions
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

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
from .h2lean import RepeatDecoder, StaticEncoder, compact_settings
from .h2limits import GOAWAY, RST_STREAM, FrameScanner, TokenBucket, count_frames
from .streams import CONNECTION_FIELDS, malformed_trailers, request_from_fields

__all__ = [
    "CONNECTION_FIELDS",
    "ErrorCodes",
    "H2Event",
    "H2Limits",
    "H2Protocol",
    "SendCredit",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DEFAULT_WINDOW = 65535
# What h2 is told about concurrency: a limit it never reaches (we enforce ours per handler).
_H2_STREAM_LIMIT = 2**31 - 1
# DATA framed for a stream at a time (several frames): the writer sends them in one write,
# and a sender with a large body takes one turn per batch, not per 16 KiB frame.
_SEND_BATCH = 128 * 1024


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one connection may cost; the defaults are safe for a public server."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 65536
    max_inbound_frame_size: int = 16384
    stream_window: int = 256 * 1024
    connection_window: int = 1024 * 1024
    reset_rate: float = 50.0  # resets per second, sustained ...
    reset_burst: int = 200  # ... after a burst of this many
    control_rate: float = 500.0  # frames that make no progress, per second ...
    control_burst: int = 1000  # ... after this many
    # Small DATA frames (not ending their stream), charged by h2limits.small_data_cost:
    # a 2-byte frame costs ~1 token, a 1 KiB one none. A chat over a WebSocket on HTTP/2
    # sends far fewer; a flood filling the 1 MiB window with 2-byte frames is cut after
    # about the burst (a few ms of CPU) instead of costing seconds.
    small_data_rate: float = 1000.0
    small_data_burst: int = 4000
    enable_connect_protocol: bool = True  # RFC 8441 (WebSockets over HTTP/2)


@dataclass(slots=True)
class SendCredit:
    """The peer opened a send window (stream 0: the connection, or all via SETTINGS)."""


H2Event = tuple[
    int, Request | BadRequest | Data | EndData | StreamReset | ConnectionClosed | SendCredit
]


@dataclass(slots=True)
class _Stream:
    unacked: int = 0  # bytes handed to the app and not yet consumed
    request_done: bool = False
    response_done: bool = False
    reset: bool = False


class H2Protocol:
    """One HTTP/2 server connection: bytes in, per-stream events out, frames to send."""

    def __init__(self, limits: H2Limits, *, upgrade_settings: bytes | None = None) -> None:
        self.limits = limits
        # Response heads are validated by the ASGI layer (sansio/headers.py), lowercased and
        # stripped of connection fields in send_headers: h2 need not check them again.
        # Request heads and trailers are checked by streams.request_from_fields and
        # malformed_trailers, which refuse one stream where h2 would end the connection.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        conn = self._conn = h2.connection.H2Connection(config)
        # HPACK that makes repeated header blocks cheap (sansio/h2lean.py).
        conn.encoder = StaticEncoder()  # type: ignore[assignment]
        conn.decoder = RepeatDecoder()
        advertised = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_inbound_frame_size,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: int(limits.enable_connect_protocol),
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        conn.local_settings = h2.settings.Settings(client=False, initial_values=advertised)
        if upgrade_settings is None:
            conn.initiate_connection()
        else:
            # Raises h2's ProtocolError on a bad HTTP2-Settings value (the caller declines).
            conn.initiate_upgrade_connection(upgrade_settings)
        # Same values as advertised, except the one we enforce ourselves (see module doc).
        advertised[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = _H2_STREAM_LIMIT
        conn.local_settings = h2.settings.Settings(client=False, initial_values=advertised)
        compact_settings(conn.local_settings)
        compact_settings(conn.remote_settings)
        conn.decoder.max_header_list_size = limits.max_header_list_size
        conn.max_inbound_frame_size = limits.max_inbound_frame_size
        if limits.connection_window > _DEFAULT_WINDOW:
            conn.increment_flow_control_window(limits.connection_window - _DEFAULT_WINDOW)
        self._out = bytearray(conn.data_to_send())
        self._streams: dict[int, _Stream] = {}
        self._scanner = FrameScanner()
        self._resets = TokenBucket(limits.reset_rate, limits.reset_burst)
        self._control = TokenBucket(limits.control_rate, limits.control_burst)
        self._small_data = TokenBucket(limits.small_data_rate, limits.small_data_burst)
        self.running = 0  # handlers started and not finished (reset ones included)
        self.last_stream_id: int | None = None  # set by a graceful GOAWAY
        self.closed = False  # no more frames will be read or written
        self.error: str | None = None  # why we ended the connection, for the log
        if upgrade_settings is not None:
            self._streams[1] = _Stream(request_done=True)
            self.running = 1

    # -- inbound -----------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[H2Event]:
        """Feed received bytes; return (stream id, event) pairs in order."""
        if self.closed:
            return []
        if not data:
            self.closed = True
            return [(0, ConnectionClosed())]
        scanner = self._scanner
        scanner.feed(data)
        reason = self._over_limits(now)
        if reason is not None:
            return self._fail(ErrorCodes.ENHANCE_YOUR_CALM, reason)
        try:
            h2_events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return self._h2_failed(exc)
        events: list[H2Event] = []
        credit = False
        for event in h2_events:
            credit = self._translate(event, events) or credit
        if credit:
            events.append((0, SendCredit()))
        if self._take_output(now) and not self.closed:
            return self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")
        return events

    def _h2_failed(self, exc: h2.exceptions.ProtocolError) -> list[H2Event]:
        out = bytearray(self._conn.data_to_send())
        reason = f"{type(exc).__name__}: {exc}"
        if not count_frames(bytes(out), GOAWAY):  # h2 sends none for a bad preface
            self._out += out
            return self._fail(ErrorCodes(exc.error_code), reason)
        last_is_goaway = out[-17:-14] == b"\0\0\x08" and out[-14] == GOAWAY
        if _is_decoding_error(exc) and last_is_goaway:
            # RFC 9113 4.3: a header block that does not decode is a COMPRESSION_ERROR
            # (h2 says PROTOCOL_ERROR); its GOAWAY is the last frame, the code its last word.
            out[-4:] = int(ErrorCodes.COMPRESSION_ERROR).to_bytes(4, "big")
        self._out += out
        self.closed = True
        self.error = reason
        return [(0, ConnectionClosed())]

    def _over_limits(self, now: float) -> str | None:
        scanner = self._scanner
        if (
            scanner.block_bytes
            > self.limits.max_header_list_size + self.limits.max_inbound_frame_size
        ):
            return "header block too large (CONTINUATION flood)"
        cheap, scanner.cheap = scanner.cheap, 0
        if cheap and not self._control.take(now, cheap):
            return "too many control frames"
        resets, scanner.resets = scanner.resets, 0
        if resets and not self._resets.take(now, resets):
            return "too many stream resets"
        small, scanner.small_data = scanner.small_data, 0.0
        if small and not self._small_data.take(now, small):
            return "too many small DATA frames"
        return None

    def _translate(self, event: h2.events.Event, events: list[H2Event]) -> bool:
        """Append our events for one h2 event; True if a send window opened."""
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event, events)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event, events)
        elif isinstance(event, h2.events.TrailersReceived):
            if malformed_trailers(event.headers or []) is not None:
                self._malformed(event.stream_id, events)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.reset:
                stream.request_done = True
                events.append((event.stream_id, EndData()))
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id)
            if stream is not None and not stream.reset:
                self._forget_body(event.stream_id, stream)
                stream.reset = True
                events.append((event.stream_id, StreamReset(int(event.error_code or 0))))
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            return True
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The peer is leaving; h2 accepts no more frames from us either.
            self.closed = True
            events.append((0, ConnectionClosed()))
        return False

    def _on_request(self, event: h2.events.RequestReceived, events: list[H2Event]) -> None:
        stream_id = event.stream_id
        refuse = self.running >= self.limits.max_concurrent_streams or (
            self.last_stream_id is not None and stream_id > self.last_stream_id
        )
        if refuse:
            # RFC 9113 5.1.2 / 6.8: this stream only; the client may retry it.
            self._conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        # (END_STREAM on the HEADERS frame comes as a StreamEnded event of its own.)
        self._streams[stream_id] = _Stream()
        self.running += 1
        events.append((stream_id, request_from_fields(event.headers or [], "2")))

    def _malformed(self, stream_id: int, events: list[H2Event]) -> None:
        """RFC 9113 8.1.1: malformed trailers are a stream error; the app sees a reset.
        (The RST_STREAM counts toward the reset budget when the output is taken.)"""
        stream = self._streams.get(stream_id)
        if stream is None or stream.reset:
            return
        stream.reset = True
        self._forget_body(stream_id, stream)
        self._conn.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
        events.append((stream_id, StreamReset(int(ErrorCodes.PROTOCOL_ERROR), remote=False)))

    def _on_data(self, event: h2.events.DataReceived, events: list[H2Event]) -> None:
        stream_id = event.stream_id
        data = event.data or b""
        size = event.flow_controlled_length or 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.reset or not data:
            # Padding, empty frames and bodies nobody reads are acknowledged at once.
            if size:
                self._conn.acknowledge_received_data(size, stream_id)
            return
        if size > len(data):
            self._conn.acknowledge_received_data(size - len(data), stream_id)
        stream.unacked += len(data)
        events.append((stream_id, Data(data)))

    def _take_output(self, now: float) -> bool:
        """Move h2's frames to our buffer; True if our own resets went over budget."""
        out = self._conn.data_to_send()
        if not out:
            return False
        self._out += out
        resets = count_frames(out, RST_STREAM)
        return bool(resets) and not self._resets.take(now, resets)

    def _fail(self, code: ErrorCodes, reason: str) -> list[H2Event]:
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._conn.highest_inbound_stream_id
        frame.error_code = code
        self._out += frame.serialize()
        self.closed = True
        self.error = reason
        return [(0, ConnectionClosed())]

    # -- the app's side ----------------------------------------------------------------------
    def consumed(self, stream_id: int, size: int) -> bool:
        """The app took ``size`` bytes of this stream's body: let the peer send more.
        True if frames (WINDOW_UPDATE) wait to be sent."""
        stream = self._streams.get(stream_id)
        if stream is None or self.closed or size <= 0:
            return False
        size = min(size, stream.unacked)
        stream.unacked -= size
        if size:
            self._conn.acknowledge_received_data(size, stream_id)
            self._out += self._conn.data_to_send()
        return bool(self._out)

    def _forget_body(self, stream_id: int, stream: _Stream) -> None:
        if stream.unacked and not self.closed:
            self._conn.acknowledge_received_data(stream.unacked, stream_id)
        stream.unacked = 0

    def send_window(self, stream_id: int) -> int:
        """Bytes of DATA that may go out on this stream now (0: wait for SendCredit)."""
        stream = self._streams.get(stream_id)
        if self.closed or stream is None or stream.reset:
            return 0
        return min(self._conn.local_flow_control_window(stream_id), _SEND_BATCH)

    def is_open(self, stream_id: int) -> bool:
        """Whether we may still write on this stream."""
        stream = self._streams.get(stream_id)
        return not self.closed and stream is not None and not stream.reset

    def send_headers(self, stream_id: int, status: int, headers: Headers, end: bool) -> None:
        fields = [(b":status", b"%d" % status)]
        fields += [
            (name.lower(), value)
            for name, value in headers
            if name.lower() not in CONNECTION_FIELDS
        ]
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise ProtocolError(f"cannot send this response head over HTTP/2: {exc}") from None
        self._sent(stream_id, end)

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        """Send at most ``send_window()`` bytes (the caller waits for credit), in as many
        DATA frames as the peer's frame size needs.

        h2 frames the first and the last of them: the first checks that the stream may
        send (it raises before anything is written), the last carries END_STREAM through
        h2's state machine. The full frames between are framed here, and taken from both
        flow-control windows as h2 would: h2 costs about 80 calls per frame, a 1 MiB
        response 64 frames."""
        conn = self._conn
        size = len(data)
        frame = conn.max_outbound_frame_size
        if size <= frame:
            conn.send_data(stream_id, data, end_stream=end)
            self._control.refund(1)
            self._sent(stream_id, end)
            return
        last = (size - 1) // frame * frame  # where the last frame starts
        conn.send_data(stream_id, data[:frame], end_stream=False)
        out = self._out
        out += conn.data_to_send()
        if last > frame:
            head = frame.to_bytes(3, "big") + b"\0\0" + stream_id.to_bytes(4, "big")
            with memoryview(data) as view:
                for pos in range(frame, last, frame):
                    out += head
                    out += view[pos : pos + frame]
            middle = last - frame
            conn.outbound_flow_control_window -= middle
            conn.streams[stream_id].outbound_flow_control_window -= middle
        conn.send_data(stream_id, data[last:], end_stream=end)
        self._control.refund((size + frame - 1) // frame)
        self._sent(stream_id, end)

    def end_stream(self, stream_id: int) -> bool:
        """END_STREAM with no data, if our side of the stream is still open."""
        stream = self._streams.get(stream_id)
        if self.closed or stream is None or stream.reset or stream.response_done:
            return False
        self.send_data(stream_id, b"", True)
        return True

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        fields = [(name.lower(), value) for name, value in headers]
        try:
            self._conn.send_headers(stream_id, fields, end_stream=True)
        except h2.exceptions.ProtocolError as exc:
            raise ProtocolError(f"cannot send these trailers over HTTP/2: {exc}") from None
        self._sent(stream_id, True)

    def _sent(self, stream_id: int, end: bool) -> None:
        self._out += self._conn.data_to_send()
        if end:
            self._streams[stream_id].response_done = True

    def reset(
        self, stream_id: int, now: float, code: ErrorCodes = ErrorCodes.INTERNAL_ERROR
    ) -> None:
        """Reset a stream from our side; counts toward the reset budget (MadeYouReset)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.reset or self.closed:
            return
        stream.reset = True
        self._forget_body(stream_id, stream)
        self._conn.reset_stream(stream_id, code)
        if self._take_output(now):
            self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets")

    def stream_finished(self, stream_id: int, now: float) -> None:
        """The stream's handler has ended: free its concurrency slot and its state."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self.running -= 1
        if self.closed or stream.reset:
            return
        self._forget_body(stream_id, stream)
        if not stream.response_done:
            self._conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        elif not stream.request_done:
            # RFC 9113 8.1: the response is complete; the rest of the request is not wanted.
            self._conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        else:
            return
        self._out += self._conn.data_to_send()

    def goaway(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """Graceful GOAWAY: streams opened so far finish, later ones are refused."""
        if self.closed or self.last_stream_id is not None:
            return
        self.last_stream_id = self._conn.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = code
        self._out += frame.serialize()

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        self._conn.ping(payload)
        self._out += self._conn.data_to_send()

    def data_to_send(self) -> bytes:
        """Frames to write, in order; the buffer is emptied."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending_output(self) -> int:
        return len(self._out)


def _is_decoding_error(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, hpack.exceptions.HPACKError) and not isinstance(
        cause, hpack.exceptions.OversizedHeaderListError
    )
