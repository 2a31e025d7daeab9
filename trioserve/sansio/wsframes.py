"""WebSocket data frames without wsproto, where that is safe, and a lighter wsproto.

When no extension is negotiated, nearly every message of a chatty WebSocket is one whole,
masked text or binary frame. While wsproto sits between frames with nothing buffered, such
frames are parsed here (a few operations instead of wsproto's generator, header objects,
masker and incremental decoder) and server messages are framed here; wsproto's state stays
exactly as if it had done it. Everything else (control frames, fragments, partial frames,
errors, permessage-deflate) goes through wsproto. These functions read wsproto internals and
fall back to plain wsproto if those are not as expected; tests/server/test_websocket_pull.py
checks them against wsproto alone.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from wsproto.connection import Connection


class EventQueue(list):  # type: ignore[type-arg]
    """Stands in for the ``deque`` a wsproto ``Connection`` keeps for its own events.

    That deque is nearly always empty (wsproto queues only the 1006 close there; frames
    come from its parser), yet an empty deque is ~620 bytes: a tenth of an idle
    WebSocket. A list does the same for the two calls made on it (``append``,
    ``popleft``) in ~60 bytes.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def lighten(conn: Connection) -> Connection:
    """Swap wsproto's empty event deque for an :class:`EventQueue` (if it is as expected)."""
    events = conn.__dict__.get("_events")
    if type(events) is deque and not events:
        conn._events = EventQueue()  # type: ignore[assignment]
    return conn


def wsproto_idle(conn: Connection) -> bool:
    """Whether wsproto sits between frames with nothing buffered, no message half-read
    and no event queued: then whole frames may be parsed without it (see
    :func:`simple_frames`) and its state stays exactly as if it had parsed them.

    Reads wsproto internals; anything unexpected answers False (wsproto does it all).
    """
    try:
        proto = conn._proto
        decoder = proto._frame_decoder
        return (
            not conn._events
            and decoder.header is None
            and not decoder.buffer.buffer
            and proto._message_decoder.opcode is None
        )
    except AttributeError:  # pragma: no cover - another wsproto version
        return False


def simple_frames(
    data: bytes | bytearray, max_size: int, out: list[dict[str, Any]], limit: int = 1 << 62
) -> int:
    """Parse the leading run of *simple* client frames in ``data`` into ASGI messages.

    Simple: a whole, unfragmented (FIN), masked text or binary frame, no RSV bits,
    payload under 64 KiB (sent in canonical length form), within ``max_size``, text valid
    UTF-8. That is nearly every message of a chatty WebSocket, and parsing it here is a
    few operations instead of wsproto's generator, header objects, masker and
    incremental decoder. Everything else (control frames, fragments, partial frames,
    errors) is left to wsproto: returns how many bytes were used, always on a frame
    boundary. Stops once ``out`` holds ``limit`` messages (a read-ahead's queue limit).
    """
    pos = 0
    end = len(data)
    room = limit - len(out)
    while end - pos >= 6 and room > 0:
        first = data[pos]
        if first != 0x81 and first != 0x82:  # FIN + text / binary, no RSV bits
            break
        second = data[pos + 1]
        if not second & 0x80:  # unmasked: wsproto answers 1002
            break
        size = second & 0x7F
        head = pos + 2
        if size == 126:
            if end - pos < 8:
                break
            size = (data[head] << 8) | data[head + 1]
            if size < 126:  # non-canonical length: wsproto answers 1002
                break
            head += 2
        elif size == 127:
            break
        start = head + 4
        stop = start + size
        if stop > end or size > max_size:
            break
        if size:
            mask = data[head:start]
            key = int.from_bytes((mask * ((size >> 2) + 1))[:size], "little")
            payload = (int.from_bytes(data[start:stop], "little") ^ key).to_bytes(size, "little")
        else:
            payload = b""
        if first == 0x81:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:  # wsproto answers 1007
                break
            out.append({"type": "websocket.receive", "text": text})
        else:
            out.append({"type": "websocket.receive", "bytes": payload})
        pos = stop
        room -= 1
    return pos


def server_frame(opcode_byte: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented frame (what wsproto writes for a message, without
    extensions), built directly."""
    size = len(payload)
    if size < 126:
        return bytes((opcode_byte, size)) + payload
    if size < 65536:
        return bytes((opcode_byte, 126)) + size.to_bytes(2, "big") + payload
    return bytes((opcode_byte, 127)) + size.to_bytes(8, "big") + payload


def message_bytes(message: dict[str, Any]) -> int:
    """What a ``websocket.receive`` message holds, roughly (text counts characters)."""
    payload = message.get("bytes")
    if payload is None:
        payload = message.get("text") or ""
    return len(payload)
