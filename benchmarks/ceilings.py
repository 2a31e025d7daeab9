#!/usr/bin/env python3
"""Trio "ceiling" servers: the least work any trio server could do per request or message.

Not real servers: they exist to show how far a trio-based server is from what trio itself
allows on this machine, with the same one-task-per-connection loop a real one has.

* ``--kind http``: ``trio.serve_listeners``, a ``receive_some`` loop, requests counted by
  their blank line (GET without bodies, keep-alive), one canned 200 response per request.
  A request head that says ``Connection: close`` gets a canned response saying so and the
  connection is closed after it, so the same ceiling serves the accept-rate scenario.
* ``--kind ws``: the opening handshake answered from the key (RFC 6455 4.2.2), then client
  frames unmasked by hand and echoed unmasked; no extensions, no fragmentation, close echoed.

Whatever a server that parses HTTP (h11, httptools) and calls an ASGI app achieves must be
below these numbers.

    python ceilings.py --kind http --port 8000      # --port 0: a free port, printed
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import struct
import sys

import trio

BODY = b"Hello, world!"
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
KEEP_ALIVE = _HEAD + b"\r\n" + BODY
CLOSE = _HEAD + b"Connection: close\r\n\r\n" + BODY
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


async def http_ceiling(stream: trio.SocketStream) -> None:
    pending = b""
    while data := await stream.receive_some(65536):
        pending += data
        count = pending.count(b"\r\n\r\n")
        if not count:
            continue
        heads, _, pending = pending.rpartition(b"\r\n\r\n")
        if b"onnection: close" in heads:  # either case of the C; the ceiling does not parse
            await stream.send_all(KEEP_ALIVE * (count - 1) + CLOSE)
            return
        await stream.send_all(KEEP_ALIVE * count)


def _accept_response(head: bytes) -> bytes:
    key = b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def _frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Complete frames at the start of ``buf`` as (opcode, payload); consumed from ``buf``."""
    frames = []
    while len(buf) >= 2:
        opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                break
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                break
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        if len(buf) < offset + 4 + length:
            break
        mask = buf[offset : offset + 4]
        masked = int.from_bytes(buf[offset + 4 : offset + 4 + length], "big")
        key = int.from_bytes((bytes(mask) * (length // 4 + 1))[:length], "big")
        payload = (masked ^ key).to_bytes(length, "big")
        del buf[: offset + 4 + length]
        frames.append((opcode, payload))
    return frames


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x80 | opcode, n]) + payload
    if n < 1 << 16:
        return bytes([0x80 | opcode, 126]) + struct.pack("!H", n) + payload
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", n) + payload


async def ws_ceiling(stream: trio.SocketStream) -> None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    await stream.send_all(_accept_response(head))
    buf = bytearray(rest)
    while True:
        frames = _frames(buf)
        out = b"".join(_server_frame(op, payload) for op, payload in frames if op != 0x9)
        if out:
            await stream.send_all(out)
        if any(op == 0x8 for op, _ in frames):
            return
        data = await stream.receive_some(65536)
        if not data:
            return
        buf += data


async def main(args: argparse.Namespace) -> None:
    serve = http_ceiling if args.kind == "http" else ws_ceiling

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(args.port, host=args.host, backlog=1024)
    port = listeners[0].socket.getsockname()[1]
    print(f"ceiling ({args.kind}) listening on {args.host}:{port}", file=sys.stderr, flush=True)
    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["http", "ws"], default="http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        pass
