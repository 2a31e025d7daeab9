"""HTTP/3 header sections whose cost is bounded before the work is done.

aioquic's ``H3Connection`` waits for a whole HEADERS frame, however long its declared
length, buffering it by copying, then QPACK-decodes it in one call, then validates every
byte of the result in Python. A client could therefore make the server do work out of
all proportion to what it sent:

- **A QPACK bomb.** One large entry in the dynamic table, referenced once per byte of a
  HEADERS frame: 50 KB on the wire decoded to 200 MB. :class:`LimitedH3Connection`
  advertises a dynamic table capacity of 0 (SETTINGS_QPACK_MAX_TABLE_CAPACITY, so an
  insert is an encoder stream error) and decodes with a table of that size. Only the
  static table can be referenced, whose longest entry is 69 bytes by RFC 9114's count.
- **A HEADERS frame over the limit.** Its declared length is known from the frame header:
  a frame longer than ``max_field_section_size`` is refused there, before one byte of it
  is buffered, and its payload is discarded as it arrives. A request head gets a
  :class:`HeadersRefused` event (the server answers 431); trailers get one too (the
  request is cut off with a stream error).
- **A control frame of any length.** aioquic also buffers a SETTINGS frame whole: one
  declaring more than :data:`MAX_CONTROL_FRAME` bytes is a connection error.
- **Static-table amplification within the limit.** A frame within the limit can still
  decode to about 100 times its size (one byte per 69-byte static entry). The decoded size
  is checked right after decoding, before aioquic validates the fields byte by byte, so a
  section over the limit never costs its validation either.

A request head is also kept from aioquic's own validation, which answers a malformed field
(an upper-case name, an empty ``:path``, a head with ``Host`` but no ``:authority``) with a
connection error. :func:`~.streams.request_from_fields` judges heads on HTTP/2 and HTTP/3
alike and refuses one stream: aioquic is shown a stand-in head that passes its checks, and
the real fields are put back into its event. Malformed trailers
(:func:`~.streams.malformed_trailers`) reset the stream with H3_MESSAGE_ERROR.

The hooks (``_check_request_or_push_frame_type``, ``_decode_headers``,
``_receive_request_or_push_data``, the ``_decoder``) are aioquic internals, pinned by
pyproject's ``aioquic < 2`` and by ``tests/http3/test_h3limits.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pylsqpack
from aioquic.h3.connection import FrameError, FrameType, HeadersState, Setting
from aioquic.h3.events import H3Event, HeadersReceived
from aioquic.quic.connection import QuicConnection

from .events import Headers
from .http3 import ServerH3Connection, field_section_size
from .streams import malformed_trailers

__all__ = ["QPACK_TABLE_CAPACITY", "HeadersRefused", "LimitedH3Connection"]

# The dynamic table capacity advertised and used: none. A client then encodes with the
# static table and literals only, which every HTTP/3 client supports (it is the default
# before SETTINGS arrive, RFC 9204 3.2.3).
QPACK_TABLE_CAPACITY = 0

# A reserved frame type (RFC 9114 7.2.8: 0x1f * N + 0x21): aioquic discards the payload of
# a frame it does not know as it arrives, which is what a refused HEADERS frame needs.
_DISCARD = 0x21

# Fields that pass aioquic's request validation, standing in for every request head: the
# event that carries them gets the real fields back, or is replaced by HeadersRefused when
# the section's decoded size is over the limit.
_STAND_IN = [(b":method", b"GET"), (b":authority", b"-")]

# aioquic buffers a SETTINGS or MAX_PUSH_ID frame whole, whatever its declared length; a
# real one is a few dozen bytes.
MAX_CONTROL_FRAME = 4096


@dataclass(slots=True)
class HeadersRefused(H3Event):
    """A header section on ``stream_id`` was over the limit and was not (fully) decoded.

    ``trailers`` is False for a request head (answer 431) and True for trailers (end the
    request with a stream error: the body it followed may be incomplete). ``malformed``:
    trailers were refused for their content, not their size.
    """

    stream_id: int
    trailers: bool
    malformed: bool = False


class LimitedH3Connection(ServerH3Connection):
    """:class:`ServerH3Connection` whose header sections cost at most their limit."""

    def __init__(
        self, quic: QuicConnection, *, max_field_section_size: int, websockets: bool = True
    ) -> None:
        super().__init__(
            quic, max_field_section_size=max_field_section_size, websockets=websockets
        )
        # aioquic's constructor made a 4 KiB decoder; nothing has been decoded yet.
        self._max_table_capacity = QPACK_TABLE_CAPACITY
        self._blocked_streams = 0
        self._decoder = pylsqpack.Decoder(QPACK_TABLE_CAPACITY, 0)
        self._refused: list[HeadersRefused] = []
        # Streams whose decoded section was over the limit: True for trailers.
        self._oversized: dict[int, bool] = {}
        # Request heads as decoded, put back into the events aioquic made of stand-ins.
        self._heads: dict[int, Headers] = {}

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = QPACK_TABLE_CAPACITY
        settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        return settings

    def _check_control_frame_type(self, frame_type: int) -> None:
        """A control frame aioquic would buffer whole may not declare more than a few KiB
        (a connection error: only a hostile peer sends one)."""
        super()._check_control_frame_type(frame_type)
        stream = self._stream.get(self._peer_control_stream_id or 0)
        if (
            frame_type in (FrameType.SETTINGS, FrameType.MAX_PUSH_ID)
            and stream is not None
            and (stream.frame_size or 0) > MAX_CONTROL_FRAME
        ):
            raise FrameError("control frame too long")

    def _check_request_or_push_frame_type(self, frame_type: int, stream: Any) -> None:
        """Called once a frame header is parsed, ``stream.frame_size`` already set: a
        HEADERS frame over the limit is turned into one aioquic discards unbuffered."""
        super()._check_request_or_push_frame_type(frame_type, stream)
        if frame_type != FrameType.HEADERS or stream.frame_size <= self.max_field_section_size:
            return
        trailers = stream.headers_recv_state != HeadersState.INITIAL
        stream.frame_type = _DISCARD
        # As if the section had been received: DATA after a refused head still frames
        # (and ends) the stream, a HEADERS frame after refused trailers is unexpected.
        stream.headers_recv_state = (
            HeadersState.AFTER_TRAILERS if trailers else HeadersState.AFTER_HEADERS
        )
        self._refused.append(HeadersRefused(stream.stream_id, trailers))

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> Any:
        """Decode, then refuse a section over the limit before aioquic validates it; what
        aioquic validates is a stand-in (see the module docstring)."""
        headers = super()._decode_headers(stream_id, frame_data)
        stream = self._stream[stream_id]
        trailers = stream.headers_recv_state != HeadersState.INITIAL
        if field_section_size(headers) > self.max_field_section_size:
            self._oversized[stream_id] = trailers
        elif trailers:
            if malformed_trailers(headers) is not None:
                self._refused.append(HeadersRefused(stream_id, True, malformed=True))
        else:
            self._heads[stream_id] = headers
            # aioquic checks the body against the length it would have read from the head.
            length = next((v for k, v in headers if k == b"content-length"), b"")
            stream.expected_content_length = int(length) if length.isdigit() else None
        return [] if trailers else list(_STAND_IN)

    def _receive_request_or_push_data(
        self, stream: Any, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        self._refused = []
        events: list[H3Event] = super()._receive_request_or_push_data(stream, data, stream_ended)
        if self._oversized or self._heads:
            events = [self._stand_in_refused(event) for event in events]
        if not self._refused:
            return events
        # In stream order: nothing precedes a refused head (DATA after it follows), and
        # what precedes refused trailers (the head, body) came in frames before them.
        heads: list[H3Event] = [r for r in self._refused if not r.trailers]
        trailers: list[H3Event] = [r for r in self._refused if r.trailers]
        return heads + events + trailers

    def _stand_in_refused(self, event: H3Event) -> H3Event:
        if type(event) is not HeadersReceived:
            return event
        if event.stream_id in self._oversized:
            return HeadersRefused(event.stream_id, self._oversized.pop(event.stream_id))
        head = self._heads.pop(event.stream_id, None)
        if head is not None:
            event.headers = head
        return event
