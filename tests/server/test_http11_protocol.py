"""HTTP/1.1 behaviour over real loopback sockets: keep-alive, pipelining, bodies, HEAD,
100-continue, HTTP/1.0, default headers and the request scope."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioserve.testing import LiveServer, open_server

from ..programs import require_program, requires_program
from ..rawhttp import read_until_close

Scope = MutableMapping[str, Any]
Connect = Callable[[LiveServer], Awaitable[trio.SocketStream]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open raw client connections that are closed when the test ends."""
    streams: list[trio.SocketStream] = []

    async def open_one(server: LiveServer) -> trio.SocketStream:
        stream = await trio.open_tcp_stream(server.host, server.port)
        streams.append(stream)
        return stream

    yield open_one
    for stream in streams:
        await stream.aclose()


async def read_responses(stream: trio.SocketStream, count: int, timeout: float = 5.0) -> bytes:
    """Read until ``count`` complete content-length framed responses have arrived."""
    buf = b""
    with trio.fail_after(timeout):
        while True:
            rest = buf
            complete = 0
            while b"\r\n\r\n" in rest:
                head, _, after = rest.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(after) < length:
                    break
                rest = after[length:]
                complete += 1
            if complete >= count:
                return buf
            data = await stream.receive_some(65536)
            assert data, f"connection closed after {complete} responses: {buf!r}"
            buf += data


def split_responses(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Split content-length framed responses into (status line, headers, body)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        out.append((lines[0], headers, data[:length]))
        data = data[length:]
    return out


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """Echoes the request: scope facts in headers, body back as the body."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message["body"]
        if not message.get("more_body"):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", b"%d" % len(body)),
                (b"x-path", scope["path"].encode()),
                (b"x-method", scope["method"].encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def scope_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with the JSON-able parts of its scope."""
    if scope["type"] != "http":
        return
    facts = {
        key: (value.decode("latin-1") if isinstance(value, bytes) else value)
        for key, value in scope.items()
        if key not in ("headers", "extensions", "state")
    }
    facts["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    body = json.dumps(facts).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- keep-alive --------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(connect: Connect) -> None:
    async with open_server(echo_app) as server:
        stream = await connect(server)
        for i in range(3):
            await stream.send_all(b"GET /n%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            [(status, headers, _)] = split_responses(await read_responses(stream, 1))
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"x-path"] == b"/n%d" % i
        await stream.aclose()


async def test_keep_alive_timeout_closes_idle_connection(connect: Connect) -> None:
    async with open_server(echo_app, keep_alive_timeout=0.2) as server:
        stream = await connect(server)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_responses(stream, 1)
        start = trio.current_time()
        assert await read_until_close(stream) == b""
        elapsed = trio.current_time() - start
        assert 0.1 < elapsed < 2.0


async def test_idle_new_connection_closed_after_keep_alive_timeout(connect: Connect) -> None:
    async with open_server(echo_app, keep_alive_timeout=0.2) as server:
        stream = await connect(server)
        start = trio.current_time()
        assert await read_until_close(stream) == b""
        assert trio.current_time() - start < 2.0


async def test_keep_alive_max_requests_closes_after_the_last(connect: Connect) -> None:
    async with open_server(echo_app, keep_alive_max_requests=2) as server:
        stream = await connect(server)
        await stream.send_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        [(_, headers, _)] = split_responses(await read_responses(stream, 1))
        assert b"connection" not in headers
        await stream.send_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await read_until_close(stream)
        [(status, headers, _)] = split_responses(data)
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"connection"] == b"close"


# -- pipelining --------------------------------------------------------------------------


async def test_pipelined_requests_answered_in_order(connect: Connect) -> None:
    async with open_server(echo_app) as server:
        stream = await connect(server)
        requests = b"".join(
            [
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
        )
        await stream.send_all(requests)
        responses = split_responses(await read_responses(stream, 4))
        assert [h[b"x-path"] for _, h, _ in responses] == [b"/a", b"/b", b"/c", b"/d"]
        assert [body for _, _, body in responses] == [b"", b"hello", b"abcde", b""]
        await stream.aclose()


async def test_pipelined_request_after_unread_body_is_served(connect: Connect) -> None:
    """The app ignores a buffered body; the next pipelined request is still parsed right."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with open_server(app) as server:
        stream = await connect(server)
        await stream.send_all(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = split_responses(await read_responses(stream, 2))
        assert [status for status, _, _ in responses] == [b"HTTP/1.1 204 No Content"] * 2
        await stream.aclose()


# -- bodies both ways --------------------------------------------------------------------


async def test_request_bodies_content_length_and_chunked() -> None:
    async with open_server(echo_app) as server, httpx.AsyncClient() as client:
        fixed = await client.post(server.url + "/x", content=b"x" * 100_000)
        assert fixed.content == b"x" * 100_000

        async def chunks() -> Any:
            for i in range(5):
                yield b"%d" % i * 1000

        streamed = await client.post(server.url + "/y", content=chunks())
        assert streamed.content == b"".join(b"%d" % i * 1000 for i in range(5))


async def test_response_chunked_when_no_content_length(connect: Connect) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with open_server(app) as server:
        stream = await connect(server)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await read_until_close(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


async def test_response_content_length_body() -> None:
    async with open_server(echo_app) as server, httpx.AsyncClient() as client:
        response = await client.post(server.url + "/", content=b"abc")
    assert response.headers["content-length"] == "3"
    assert "transfer-encoding" not in response.headers


# -- HEAD --------------------------------------------------------------------------------


async def test_head_sends_headers_but_no_body(connect: Connect) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b"x" * 1234
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1234"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async with open_server(app) as server:
        stream = await connect(server)
        await stream.send_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await read_until_close(stream)
    head1, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length: 1234" in head1.lower()
    # The HEAD answer has no body: the very next bytes are the GET's response.
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"x" * 1234)


# -- Expect: 100-continue ----------------------------------------------------------------


async def test_100_continue_sent_on_first_receive(connect: Connect) -> None:
    async with open_server(echo_app) as server:
        stream = await connect(server)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"hello")
        [(status, _, body)] = split_responses(await read_responses(stream, 1))
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"hello"
        await stream.aclose()


async def test_100_continue_is_lazy(connect: Connect) -> None:
    """Nothing is sent until the app calls receive()."""
    gate = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await gate.wait()
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    async with open_server(app) as server:
        stream = await connect(server)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        with trio.move_on_after(0.3):
            early = await stream.receive_some(65536)
            raise AssertionError(f"server answered before the app read: {early!r}")
        gate.set()
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"ok")
        await stream.aclose()


async def test_100_continue_not_sent_when_app_answers_without_reading(connect: Connect) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]}
        )
        await send({"type": "http.response.body", "body": b""})

    async with open_server(app) as server:
        stream = await connect(server)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\nExpect: 100-continue\r\n\r\n"
        )
        data = await read_until_close(stream)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b" 100 " not in data


# -- HTTP/1.0 ----------------------------------------------------------------------------


async def test_http10_closes_after_response(connect: Connect) -> None:
    async with open_server(scope_app) as server:
        stream = await connect(server)
        await stream.send_all(b"GET /old HTTP/1.0\r\n\r\n")
        data = await read_until_close(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["http_version"] == "1.0"


async def test_http10_keep_alive_request_gets_a_clean_close(connect: Connect) -> None:
    """h11 never keeps an HTTP/1.0 connection alive: it says so and closes cleanly."""
    async with open_server(echo_app) as server:
        stream = await connect(server)
        await stream.send_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(status, headers, _)] = split_responses(await read_until_close(stream))
    assert status.startswith(b"HTTP/1.1 200")
    assert headers[b"connection"] == b"close"
    assert headers[b"x-path"] == b"/a"


# -- default headers ---------------------------------------------------------------------


async def test_date_and_server_headers_on_by_default() -> None:
    async with open_server(echo_app) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.headers["server"] == "trioserve"
    assert response.headers["date"].endswith(" GMT")


async def test_date_and_server_headers_switch_off() -> None:
    async with (
        open_server(echo_app, include_date_header=False, include_server_header=False) as server,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(server.url)
    assert "server" not in response.headers
    assert "date" not in response.headers


async def test_configured_default_headers_and_app_header_wins() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-frame-options", b"SAMEORIGIN"), (b"server", b"mine")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    headers = ["X-Frame-Options: DENY", "X-Team: core"]
    async with open_server(app, headers=headers) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers.get_list("server") == ["mine"]
    assert response.headers["x-team"] == "core"


# -- the scope ---------------------------------------------------------------------------


async def test_scope_fields(connect: Connect) -> None:
    async with open_server(scope_app, root_path="/api") as server:
        stream = await connect(server)
        local_port = stream.socket.getsockname()[1]
        await stream.send_all(
            b"GET /a%20b/c%2Fd?x=1&y=%20 HTTP/1.1\r\nHost: example\r\n"
            b"X-Custom: Value\r\nConnection: close\r\n\r\n"
        )
        data = await read_until_close(stream)
    scope = json.loads(data.partition(b"\r\n\r\n")[2])
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] in ("2.3", "2.4", "2.5")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/a b/c/d"
    assert scope["raw_path"] == "/api/a%20b/c%2Fd"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["client"] == ["127.0.0.1", local_port]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert ["x-custom", "Value"] in scope["headers"]
    assert ["host", "example"] in scope["headers"]


async def test_scope_extensions_is_a_dict_and_state_absent_without_lifespan() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with open_server(app) as server, httpx.AsyncClient() as client:
        assert (await client.get(server.url)).status_code == 204
    assert isinstance(seen[0]["extensions"], dict)
    assert isinstance(seen[0]["headers"], list)
    assert all(type(k) is bytes and type(v) is bytes for k, v in seen[0]["headers"])


async def test_configured_server_header_replaces_the_default() -> None:
    async with (
        open_server(echo_app, headers=["Server: edge/1.0"]) as server,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(server.url)
    assert response.headers.get_list("server") == ["edge/1.0"]


async def test_client_connection_close_is_honoured(connect: Connect) -> None:
    async with open_server(echo_app) as server:
        stream = await connect(server)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        [(status, headers, _)] = split_responses(await read_until_close(stream))
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"connection"].lower() == b"close"


async def test_path_is_percent_decoded_utf8_and_raw_non_ascii_refused(connect: Connect) -> None:
    async with open_server(scope_app) as server:
        stream = await connect(server)
        await stream.send_all(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        [(status, _, body)] = split_responses(await read_until_close(stream))
        assert status == b"HTTP/1.1 200 OK"
        assert json.loads(body)["path"] == "/café"
        assert json.loads(body)["raw_path"] == "/caf%C3%A9"
        raw = await connect(server)
        await raw.send_all(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_until_close(raw)).startswith(b"HTTP/1.1 400 ")


@requires_program("curl", package="curl")
async def test_curl_expect_100_continue_upload(tmp_path: Path) -> None:
    """A real client: curl sends 'Expect: 100-continue' for large uploads and waits."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"p" * 2_000_000)
    curl = require_program("curl", package="curl")
    async with open_server(echo_app) as server:
        result = await trio.run_process(
            [curl, "-sv", "--data-binary", f"@{payload}", "-o", "-", server.url + "/up"],
            capture_stdout=True,
            capture_stderr=True,
        )
    assert b"HTTP/1.1 100 Continue" in result.stderr
    assert result.stdout == payload.read_bytes()


async def test_chunked_trailers_extensions_then_pipelined_request(connect: Connect) -> None:
    async with open_server(echo_app) as server:
        stream = await connect(server)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: v\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        responses = split_responses(await read_until_close(stream))
    assert [(h[b"x-path"], body) for _, h, body in responses] == [(b"/", b"abc"), (b"/next", b"")]


async def test_asterisk_and_absolute_form_targets(connect: Connect) -> None:
    async with open_server(scope_app) as server:
        first = await connect(server)
        await first.send_all(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        [(_, _, body)] = split_responses(await read_until_close(first))
        assert json.loads(body)["path"] == "*"
        second = await connect(server)
        await second.send_all(
            b"GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n"
            b"Connection: close\r\n\r\n"
        )
        [(_, _, body)] = split_responses(await read_until_close(second))
        scope = json.loads(body)
        assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/abs", "/abs", "q=1")


async def test_keep_alive_timeout_zero_turns_keep_alive_off(connect: Connect) -> None:
    """0 means no keep-alive: each response says close, and a new connection is still
    given time to send its request (it is not closed before it could)."""
    async with open_server(echo_app, keep_alive_timeout=0) as server:
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                response = await client.get(server.url)
                assert response.status_code == 200
                assert response.headers["connection"] == "close"
        stream = await connect(server)
        await trio.sleep(0.2)
        await stream.send_all(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, _)] = split_responses(await read_until_close(stream))
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"x-path"] == b"/late"


async def test_configured_date_header_replaces_the_default() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with open_server(app, headers=["Date: fixed"]) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.headers.get_list("date") == ["fixed"]
