"""What an HTTP/2 peer may cost us: rate buckets and a frame-header scanner.

h2 parses frames and keeps the protocol state, but it cannot tell a browser from a flood:
a PING, a SETTINGS, a PRIORITY, an empty DATA frame or a RST_STREAM each cost the server
work while moving no request forward. These small pieces count such frames (time is passed
in) so the HTTP/2 protocol can end a connection that sends them faster than any client
needs to, with GOAWAY ENHANCE_YOUR_CALM.

A tiny DATA frame is nearly such a frame: flow control counts only payload bytes, so the
1 MiB connection window admits half a million 2-byte frames, each costing h2 and us the
work of a full one. The scanner charges a DATA frame that does not end its stream for the
part of :data:`SMALL_DATA` it leaves empty (:func:`small_data_cost`): full frames are free,
the last frame of a body is free, a 2-byte frame costs nearly a whole token.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 9113 6: frame types we look at.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
_KNOWN_TYPES = frozenset(range(0xA))
# Frames that make no progress on any request; each costs a token of the control bucket.
_CHEAP_TYPES = frozenset((PRIORITY, SETTINGS, PING, WINDOW_UPDATE))
# A DATA frame of at least this many payload bytes is "full" (costs no token); smaller ones
# cost the missing fraction. 1 KiB: h2 and our event per frame cost about what copying 1 KiB
# does, and every client we know of (curl, h2load, httpx, browsers) sends 16 KiB frames.
SMALL_DATA = 1024


def small_data_cost(length: int, flags: int) -> float:
    """Tokens a DATA frame costs: what its payload falls short of :data:`SMALL_DATA`.

    A frame that ends its stream is free (it finishes a request, which the stream limits
    already count), and so is an empty one here (the cheap-frame budget counts those).
    """
    if flags & END_STREAM or length >= SMALL_DATA or length == 0:
        return 0.0
    return 1.0 - length / SMALL_DATA


@dataclass(slots=True)
class TokenBucket:
    """``burst`` events at once, then ``rate`` per second; ``take`` says whether one fits."""

    rate: float
    burst: float
    tokens: float = 0.0
    last: float | None = None  # None until the first take, which starts full

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.last is None:
            self.tokens = self.burst
            self.last = now
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        self.tokens -= cost
        return self.tokens >= 0

    def refund(self, amount: float) -> None:
        """Useful work done (a DATA frame sent) buys back a little of the budget."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + amount)


class FrameScanner:
    """Walks the 9-byte frame headers of the inbound byte stream, ahead of h2.

    It keeps no payloads (h2 does), only counts: cheap frames, header-block bytes
    (HEADERS plus its CONTINUATIONs, which h2 buffers until END_HEADERS), and the frame
    types seen, so limits hold whatever the read sizes.
    """

    __slots__ = ("_head", "_skip", "block_bytes", "cheap", "resets", "small_data")

    def __init__(self, skip: int = 24) -> None:
        self._head = b""  # a frame header cut by a read boundary
        # Payload bytes of the current frame still to pass over; first the client preface
        # (h2 checks it).
        self._skip = skip
        self.block_bytes = 0  # bytes of the header block being received
        self.cheap = 0  # frames that made no progress, since the last reset of the counters
        self.resets = 0  # RST_STREAM frames received
        self.small_data = 0.0  # what small DATA frames cost (small_data_cost), summed

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = 9 - len(self._head)
            if end - pos < need:
                self._head += bytes(view[pos:end])
                return
            head = self._head + bytes(view[pos : pos + need])
            self._head = b""
            pos += need
            self._frame(head)

    def _frame(self, head: bytes) -> None:
        length = int.from_bytes(head[:3], "big")
        kind = head[3]
        flags = head[4]
        self._skip = length
        if kind in _CHEAP_TYPES or kind not in _KNOWN_TYPES:
            self.cheap += 1
        elif kind == DATA:
            if length == 0 and not flags & END_STREAM:
                self.cheap += 1
            elif length < SMALL_DATA:
                self.small_data += small_data_cost(length, flags)
        elif kind == RST_STREAM:
            self.resets += 1
        elif kind in (HEADERS, PUSH_PROMISE):
            self.block_bytes = 0 if flags & END_HEADERS else length
        elif kind == CONTINUATION:
            if length == 0 and not flags & END_HEADERS:
                self.cheap += 1
            self.block_bytes = 0 if flags & END_HEADERS else self.block_bytes + length


def count_frames(data: bytes, kind: int) -> int:
    """Frames of one type in a run of whole frames (our own output)."""
    count = 0
    pos = 0
    end = len(data)
    while pos + 9 <= end:
        if data[pos + 3] == kind:
            count += 1
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    return count
