#!/usr/bin/env python3
"""The WebSocket load generator: C connections doing echo round trips for D seconds.

usage: ws_client.py URL -c CONNECTIONS -d SECONDS [--size BYTES]

Each connection does the opening handshake, then strictly sequential round trips: one masked
text frame of ``--size`` bytes out, its echo in (checked byte for byte). A minimal client of
our own on asyncio (uvloop when installed), because a full client library costs the client
core more than the server costs its own and then the client, not the server, is measured.
Prints one JSON line: ``{"messages": N, "seconds": S, "errors": E, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, final frame, as a client must send (RFC 6455 5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return head + mask + masked


async def handshake(
    host: str, port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
        % (path.encode(), host.encode(), port, key)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:60]!r}")
    return reader, writer


async def round_trips(url: str, size: int, deadline: float) -> int:
    parts = urlsplit(url)
    reader, writer = await handshake(
        parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    )
    message = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    expected = bytes([0x81, size]) + message if size < 126 else None
    count = 0
    try:
        while time.monotonic() < deadline:
            writer.write(client_frame(0x1, message))
            echo = await reader.readexactly(2 + size if expected else 4 + size)
            if expected is not None and echo != expected:
                raise ConnectionError(f"wrong echo {echo[:40]!r}")
            count += 1
        writer.write(client_frame(0x8, struct.pack("!H", 1000)))
        await writer.drain()
    finally:
        writer.close()
    return count


async def run(url: str, connections: int, seconds: float, size: int) -> dict[str, object]:
    started = time.monotonic()
    deadline = started + seconds
    results = await asyncio.gather(
        *(round_trips(url, size, deadline) for _ in range(connections)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    messages = sum(r for r in results if isinstance(r, int))
    out: dict[str, object] = {
        "messages": messages,
        "seconds": round(time.monotonic() - started, 3),
        "errors": len(errors),
    }
    if errors:
        out["error"] = repr(errors[0])[:200]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(args.url, args.connections, args.duration, args.size))
    print(json.dumps(result), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
