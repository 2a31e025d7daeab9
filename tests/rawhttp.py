"""Raw-socket helpers for tests that must see exactly what went over the wire."""

from __future__ import annotations

import re

import trio


async def read_until_close(stream: trio.SocketStream, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    chunks = []
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


async def read_response(stream: trio.SocketStream, timeout: float = 5.0) -> bytes:
    """One content-length framed response (or whatever arrives before close)."""
    buf = b""
    with trio.fail_after(timeout):
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"(?i)content-length: *(\d+)", head)
                if match and len(body) >= int(match.group(1)):
                    return buf
            data = await stream.receive_some(65536)
            if not data:
                return buf
            buf += data
