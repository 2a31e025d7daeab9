"""Head size limit, slowloris deadline, malformed requests: over real loopback sockets."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import LiveServer, open_server

from ..rawhttp import read_until_close

Scope = MutableMapping[str, Any]


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"hi"})


async def send_ignoring_close(stream: trio.SocketStream, data: bytes) -> bool:
    """Send; False if the server already closed (it may answer before reading it all)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def next_client_served(server: LiveServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/after")
    assert response.status_code == 200
    assert response.text == "hi"


def big_head(size: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"


# -- head size ---------------------------------------------------------------------------


async def test_oversized_head_in_one_write_gets_431() -> None:
    async with open_server(hello, h11_max_incomplete_size=4096) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await send_ignoring_close(stream, big_head(8000))
            data = await read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in data.lower()
        await next_client_served(server)


async def test_oversized_head_byte_by_byte_gets_431() -> None:
    async with open_server(hello, h11_max_incomplete_size=2048) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            head = big_head(4000)
            answer = b""
            for i in range(len(head)):
                if not await send_ignoring_close(stream, head[i : i + 1]):
                    break
                if i % 256 == 0:
                    with trio.move_on_after(0):
                        answer += await stream.receive_some(65536)
                    if answer:
                        break
            data = answer + await read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 431 ")
        await next_client_served(server)


async def test_oversized_head_in_many_medium_writes_gets_431() -> None:
    async with open_server(hello, h11_max_incomplete_size=4096) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            head = big_head(10000)
            for i in range(0, len(head), 700):
                if not await send_ignoring_close(stream, head[i : i + 700]):
                    break
            data = await read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 431 ")


async def test_head_just_under_the_limit_is_served() -> None:
    async with open_server(hello, h11_max_incomplete_size=4096) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(big_head(3000))
            with trio.fail_after(5):
                data = await stream.receive_some(65536)
        assert data.startswith(b"HTTP/1.1 200 ")


async def test_many_headers_over_the_limit_get_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(400)
    )
    async with open_server(hello) as server:  # default 16 KiB
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await send_ignoring_close(stream, head + b"\r\n")
            data = await read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 431 ")


# -- slowloris ---------------------------------------------------------------------------


async def test_trickled_head_is_cut_at_request_head_timeout() -> None:
    async with open_server(hello, request_head_timeout=0.5, keep_alive_timeout=5) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            start = trio.current_time()
            closed_at = None
            data = b""
            head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 1000
            with trio.fail_after(5):
                for i in range(len(head)):
                    if not await send_ignoring_close(stream, head[i : i + 1]):
                        break
                    with trio.move_on_after(0.02):
                        more = await stream.receive_some(65536)
                        data += more
                        if not more:
                            break
                    if data:
                        break
                data += await read_until_close(stream)
                closed_at = trio.current_time() - start
        assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
        # The trickle kept arriving every 20 ms, but the deadline held.
        assert 0.4 < closed_at < 1.5, closed_at
        await next_client_served(server)


async def test_stalled_partial_head_gets_408() -> None:
    async with open_server(hello, request_head_timeout=0.3) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost")
            start = trio.current_time()
            data = await read_until_close(stream)
            elapsed = trio.current_time() - start
        assert data.startswith(b"HTTP/1.1 408 ")
        assert elapsed < 2


async def test_partial_head_deadline_not_extended_by_keep_alive() -> None:
    """A second request trickled on a kept-alive connection gets the same deadline."""
    async with open_server(hello, request_head_timeout=0.4, keep_alive_timeout=10) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
            start = trio.current_time()
            await stream.send_all(b"GET /")
            for _ in range(10):
                await trio.sleep(0.1)
                if not await send_ignoring_close(stream, b"a"):
                    break
            data = await read_until_close(stream)
            elapsed = trio.current_time() - start
        assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
        assert elapsed < 1.5


# -- malformed requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon-Here\r\n\r\n",
        b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
)
async def test_malformed_request_gets_4xx_with_connection_close(request_bytes: bytes) -> None:
    async with open_server(hello) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(request_bytes)
            data = await read_until_close(stream)
        status = int(data.split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 505, data
        assert b"connection: close" in data.lower()
        await next_client_served(server)


async def test_http11_without_host_is_400() -> None:
    async with open_server(hello) as server:
        async with await trio.open_tcp_stream(server.host, server.port) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
            data = await read_until_close(stream)
        assert data.startswith(b"HTTP/1.1 400 ")


async def test_bad_request_does_not_disturb_another_connection() -> None:
    async with (
        open_server(hello) as server,
        await trio.open_tcp_stream(server.host, server.port) as good,
        await trio.open_tcp_stream(server.host, server.port) as bad,
    ):
        await good.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await bad.send_all(b"\x00\x01\x02 nonsense\r\n\r\n")
        assert (await read_until_close(bad)).startswith(b"HTTP/1.1 400 ")
        await good.send_all(b"\r\n")
        with trio.fail_after(5):
            assert (await good.receive_some(65536)).startswith(b"HTTP/1.1 200 ")


def padded_head(total: int, *, newline: bytes = b"\r\n") -> bytes:
    """A head of exactly ``total`` bytes, most of it optional whitespace around a value."""
    start = b"GET / HTTP/1.1" + newline + b"Host: x" + newline + b"X-Pad:"
    end = b"v" + newline + newline
    head = start + b" " * (total - len(start) - len(end)) + end
    assert len(head) == total
    return head


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("chunking", ["one-write", "byte-by-byte", "three-parts"])
@pytest.mark.parametrize(("extra", "expected"), [(1, b"200"), (2, b"431")])
async def test_head_limit_counts_raw_bytes_for_any_chunking(
    newline: bytes, chunking: str, extra: int, expected: bytes
) -> None:
    """The limit is on the bytes received (whitespace counts), with the same answer
    however the head is cut: a head of limit + 1 bytes passes, limit + 2 is refused."""
    limit = 512
    head = padded_head(limit + extra, newline=newline)
    if chunking == "one-write":
        parts = [head]
    elif chunking == "byte-by-byte":
        parts = [head[i : i + 1] for i in range(len(head))]
    else:
        parts = [head[:100], head[100:400], head[400:]]
    async with (
        open_server(hello, h11_max_incomplete_size=limit) as server,
        await trio.open_tcp_stream(server.host, server.port) as stream,
    ):
        for part in parts:
            if not await send_ignoring_close(stream, part):
                break
            if chunking == "byte-by-byte":
                await trio.sleep(0)
        with trio.fail_after(5):
            data = await stream.receive_some(65536)
    assert data.split(b" ", 2)[1] == expected, data
