"""One WebSocket contract on every HTTP version: keep-alive pings, the ping-timeout close
(1011), the watchdog's pump for an app that does not read, the max-size close (1009) and
the 1001 close when shutdown begins; and the bookkeeping a WebSocket shares with HTTP
requests (server/exchange.py): app_exception in the metrics, the access-log line, the
gates. HTTP/1.1 is an Upgrade over a raw socket, HTTP/2 an
extended CONNECT (RFC 8441) in raw frames, HTTP/3 one (RFC 9220) over aioquic; each
carries wsproto's client frames, so the client answers pings only when a test says so.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from tests.h2raw import RawH2, close_all
from tests.metrics.helpers import admin_url, parse, value
from tests.server.test_websocket_h2 import WSOverH2, connect
from trioserve.config import Config, aioquic_usable
from trioserve.server import wswatch
from trioserve.server.serve import serve

VERSIONS = [
    "1.1",
    "2",
    pytest.param(
        "3",
        marks=pytest.mark.skipif(not aioquic_usable(), reason="HTTP/3 needs aioquic (3.11+)"),
    ),
]


@pytest.fixture(autouse=True)
async def _close_h2_clients() -> AsyncIterator[None]:
    yield
    await close_all()


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("wscerts")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"


@dataclass
class App:
    """Accepts; ``/echo`` echoes, ``/away`` never calls receive() again. Records the
    disconnect the app saw."""

    disconnects: list[dict[str, Any]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        try:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            if scope["path"] == "/away":
                await trio.sleep_forever()
            if scope["path"] == "/boom":
                raise RuntimeError("the app failed")
            if scope["path"] == "/late":  # sends after the client's close: send() raises
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                await send({"type": "websocket.send", "text": "too late"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.disconnects.append(message)
                    return
                await send({**message, "type": "websocket.send"})
        finally:
            self.done.set()


class WS:
    """One client WebSocket, whatever carries it: wsproto events in and out."""

    def __init__(self, send: Any, events: Any) -> None:
        self._send = send
        self._events = events

    async def send(self, event: Any) -> None:
        await self._send(event)

    async def events(self) -> list[Any]:
        """The events of the next piece the server sent ([] once the stream ended)."""
        return list(await self._events())

    async def until(self, kind: type, timeout: float = 10) -> tuple[Any, list[Any]]:
        """Read until an event of ``kind``: (it, everything seen before it)."""
        seen: list[Any] = []
        with trio.fail_after(timeout):
            while True:
                events = await self.events()
                for event in events:
                    if isinstance(event, kind):
                        return event, seen
                    seen.append(event)
                if not events and await self.ended():
                    raise AssertionError(f"stream ended before {kind.__name__}: {seen}")

    async def ended(self) -> bool:
        return False


@asynccontextmanager
async def websocket_server(
    version: str, app: App, certs: tuple[Path, Path, Path], **options: Any
) -> AsyncIterator[tuple[trio.Event, Any]]:
    """Serve ``app``; yields (the shutdown trigger, an ``open(path)`` for client WebSockets)."""
    settings: dict[str, Any] = {"bind": ["127.0.0.1:0"], **options}
    udp = 0
    if version == "3":
        from tests.h3client import free_udp_port

        udp = free_udp_port()
        settings.update(
            quic_bind=[f"127.0.0.1:{udp}"], certfile=str(certs[1]), keyfile=str(certs[2])
        )
    trigger = trio.Event()
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        urls = await nursery.start(
            partial(serve, app, Config.from_mapping(settings), shutdown_trigger=trigger)
        )
        port = int(urls[0].rsplit(":", 1)[1])

        async def open_ws(path: str) -> WS:
            if version == "1.1":
                return await _open_h1(stack, port, path)
            if version == "2":
                return await _open_h2(port, path)
            return await _open_h3(stack, udp, str(certs[0]), path)

        open_ws.port = port  # type: ignore[attr-defined]
        try:
            yield trigger, open_ws
        finally:
            trigger.set()


async def _open_h1(stack: AsyncExitStack, port: int, path: str) -> WS:
    stream = await stack.enter_async_context(await trio.open_tcp_stream("127.0.0.1", port))
    key = base64.b64encode(b"0123456789abcdef")
    await stream.send_all(
        b"GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), key)
    )
    head = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(rest)
    ended = False

    async def send(event: Any) -> None:
        await stream.send_all(conn.send(event))

    async def events() -> list[Any]:
        nonlocal ended
        pending = list(conn.events())
        if pending:
            return pending
        data = await stream.receive_some(65536)
        ended = not data
        conn.receive_data(data or None)
        return list(conn.events())

    ws = WS(send, events)
    ws.ended = partial(_value, lambda: ended)  # type: ignore[method-assign]
    return ws


async def _value(get: Any) -> bool:
    return bool(get())


async def _open_h2(port: int, path: str) -> WS:
    client = await RawH2.open(port)
    await client.send(client.headers(1, connect(path), False))
    head = await client.frame()
    assert client.decode(head)[b":status"] == b"200"
    ws = WSOverH2(client, 1)
    result = WS(ws.send, ws.events)
    result.ended = partial(_value, lambda: ws.ended)  # type: ignore[method-assign]
    return result


async def _open_h3(stack: AsyncExitStack, udp: int, ca_file: str, path: str) -> WS:
    from tests.h3client import h3_client
    from tests.http3.test_websocket import WSOverH3, connect_fields

    client = await stack.enter_async_context(h3_client(udp, ca_file))
    stream_id = client.open(fields=connect_fields(path.encode()), end=False)
    head = await client.wait(stream_id, until=lambda r: bool(r.headers))
    assert head.status == 200
    ws = WSOverH3(client, stream_id)
    stream = client.streams[stream_id]

    async def send(event: Any) -> None:
        ws.send(event)

    async def events() -> list[Any]:
        # (WSOverH3.events feeds the end before parsing what came with it: wsproto would
        # then report 1006 ahead of a close frame that arrived with the FIN.)
        await client.wait(stream_id, until=lambda r: len(r.body) > ws.seen or r.ended or r.reset)
        ws.ws.receive_data(bytes(stream.body[ws.seen :]))
        ws.seen = len(stream.body)
        got = list(ws.ws.events())
        if stream.ended and not got:
            ws.ws.receive_data(None)
            got = list(ws.ws.events())
        return got

    result = WS(send, events)
    result.ended = partial(_value, lambda: stream.ended or stream.reset)  # type: ignore[method-assign]
    return result


@pytest.mark.parametrize("version", VERSIONS)
async def test_keepalive_pings_reach_every_version(
    version: str, cert_files: tuple[Path, Path, Path]
) -> None:
    app = App()
    options = {"websocket_ping_interval": 0.2, "websocket_ping_timeout": 2}
    async with websocket_server(version, app, cert_files, **options) as (_, open_ws):
        ws = await open_ws("/echo")
        for _ in range(3):  # pinged again after each answer: the WebSocket stays open
            ping, _ = await ws.until(Ping, timeout=5)
            await ws.send(ping.response())
        await ws.send(TextMessage("still here"))
        message, _ = await ws.until(TextMessage)
        assert message.data == "still here"


@pytest.mark.parametrize("version", VERSIONS)
async def test_ping_timeout_closes_1011_on_every_version(
    version: str, cert_files: tuple[Path, Path, Path]
) -> None:
    app = App()
    options = {"websocket_ping_interval": 0.3, "websocket_ping_timeout": 0.3}
    async with websocket_server(version, app, cert_files, **options) as (_, open_ws):
        ws = await open_ws("/echo")
        start = trio.current_time()
        close, seen = await ws.until(CloseConnection, timeout=10)  # pings never answered
        elapsed = trio.current_time() - start
        with trio.fail_after(5):
            await app.done.wait()
    assert close.code == 1011
    assert any(isinstance(event, Ping) for event in seen)
    assert 0.5 <= elapsed < 5
    assert app.disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


@pytest.mark.parametrize("version", VERSIONS)
async def test_watchdog_answers_pings_for_an_app_that_does_not_read(
    version: str, cert_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wswatch, "WATCH_INTERVAL", 0.05)
    app = App()
    async with websocket_server(version, app, cert_files) as (_, open_ws):
        ws = await open_ws("/away")
        await trio.sleep(0.3)  # a few watchdog rounds: the pump reads for the app
        await ws.send(Ping(b"are you there"))
        pong, _ = await ws.until(Pong, timeout=5)
    assert pong.payload == b"are you there"


@pytest.mark.parametrize("version", VERSIONS)
async def test_oversized_message_closes_1009_on_every_version(
    version: str, cert_files: tuple[Path, Path, Path]
) -> None:
    app = App()
    async with websocket_server(version, app, cert_files, websocket_max_message_size=1000) as (
        _,
        open_ws,
    ):
        ws = await open_ws("/echo")
        await ws.send(BytesMessage(b"a" * 1000))
        echoed, _ = await ws.until(BytesMessage)
        await ws.send(BytesMessage(b"b" * 1001))
        close, _ = await ws.until(CloseConnection)
        with trio.fail_after(5):
            await app.done.wait()
    assert len(echoed.data) == 1000
    assert close.code == 1009
    assert app.disconnects == [
        {"type": "websocket.disconnect", "code": 1009, "reason": "message too big"}
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_shutdown_closes_1001_at_once_on_every_version(
    version: str, cert_files: tuple[Path, Path, Path]
) -> None:
    app = App()
    async with websocket_server(version, app, cert_files, graceful_timeout=4) as (
        trigger,
        open_ws,
    ):
        ws = await open_ws("/echo")
        await ws.send(TextMessage("hello"))
        await ws.until(TextMessage)
        start = trio.current_time()
        trigger.set()
        close, _ = await ws.until(CloseConnection, timeout=10)
        elapsed = trio.current_time() - start
        await ws.send(close.response())
        with trio.fail_after(5):
            await app.done.wait()
    assert close.code == 1001
    assert elapsed < 3  # at once, not at the 4 s deadline
    assert app.disconnects == [
        {"type": "websocket.disconnect", "code": 1001, "reason": "server shutting down"}
    ]


async def _scrape(caplog: pytest.LogCaptureFixture) -> dict[Any, float]:
    stream = await trio.open_tcp_stream(
        "127.0.0.1", int(admin_url(caplog.records).rsplit(":", 1)[1])
    )
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return parse(data.split(b"\r\n\r\n", 1)[1].decode())


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_app_failing_in_a_websocket_counts_as_app_exception(
    version: str, cert_files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")
    app = App()
    options = {"metrics_bind": "127.0.0.1:0"}
    async with websocket_server(version, app, cert_files, **options) as (_, open_ws):
        ws = await open_ws("/boom")
        close, _ = await ws.until(CloseConnection)
        assert close.code == 1011
        await ws.send(close.response())
        # The client leaving, re-raised by the app from its send(): not the app's failure.
        late = await open_ws("/late")
        await late.send(CloseConnection(1000))
        await late.until(CloseConnection)
        with trio.fail_after(5):
            while value(samples := await _scrape(caplog), "trioserve_websockets_total") < 2:
                await trio.sleep(0.05)
    assert value(samples, "trioserve_app_exceptions_total") == 1
    failures = [r for r in caplog.records if r.getMessage().startswith("Exception in ASGI")]
    assert [r.getMessage() for r in failures] == [
        "Exception in ASGI application (WebSocket /boom)"
    ]
    assert any(r.getMessage() == "client went away during WebSocket /late" for r in caplog.records)


@pytest.mark.parametrize("version", VERSIONS)
async def test_websocket_access_log_line_on_every_version(
    version: str, cert_files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    app = App()
    async with websocket_server(version, app, cert_files) as (_, open_ws):
        ws = await open_ws("/echo")
        await ws.send(TextMessage("hello"))
        await ws.until(TextMessage)
        await ws.send(CloseConnection(1000))
        await ws.until(CloseConnection)
        with trio.fail_after(5):
            await app.done.wait()
            while not [r for r in caplog.records if r.name == "trioserve.access"]:
                await trio.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    status = " 101 " if version == "1.1" else " 200 "
    assert len(lines) == 1
    assert "/echo" in lines[0] and status in lines[0] and f"WS/{version}" in lines[0], lines


async def test_a_refused_upgrade_gets_an_access_log_line_and_a_refusal_count(
    cert_files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The gates are the HTTP requests' (server_names here): the same 404, counted as a
    refusal, and an access-log line as an HTTP request refused by them gets."""
    caplog.set_level(logging.INFO)
    options = {"server_names": ["good.example"], "metrics_bind": "127.0.0.1:0"}
    async with websocket_server("1.1", App(), cert_files, **options) as (_, open_ws):
        stream = await trio.open_tcp_stream("127.0.0.1", open_ws.port)
        async with stream:
            key = base64.b64encode(b"0123456789abcdef")
            await stream.send_all(
                b"GET /gated HTTP/1.1\r\nHost: bad.example\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" % key
            )
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
        samples = await _scrape(caplog)
    assert head.startswith(b"HTTP/1.1 404 ")
    assert value(samples, "trioserve_refusals_total", reason="404") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1 and "/gated" in lines[0] and " 404 " in lines[0], lines
