"""HTTP/2 served over real loopback sockets, frame by frame (RFC 9113 sections 3 to 8) and
against each abuse case, with raw hyperframe frames as the client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.h2raw import PREFACE, RawH2, close_all, get, post
from trioserve.run import make_config
from trioserve.server.serve import serve
from trioserve.testing import open_server


@asynccontextmanager
async def stoppable(app: Any, **options: Any) -> AsyncIterator[tuple[int, trio.Event, trio.Event]]:
    """A server the test shuts down itself: (port, shutdown trigger, stopped)."""
    config = make_config(environ={}, bind=["127.0.0.1:0"], **options)
    trigger = trio.Event()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(app, config, shutdown_trigger=trigger, task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(run)
        yield int(url.rsplit(":", 1)[1]), trigger, stopped
        trigger.set()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


class Probe:
    """An app that records what each request saw and lets a test hold handlers open."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = trio.Event()
        self.messages: list[dict[str, Any]] = []
        self.scopes: list[dict[str, Any]] = []
        self.send_errors: list[BaseException] = []
        self.cancelled = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.handle(scope, receive, send)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/hold":
            await self.release.wait()
        if path == "/wait-disconnect":
            while (message := await receive())["type"] != "http.disconnect":
                self.messages.append(message)
            self.messages.append(message)
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            except OSError as exc:
                self.send_errors.append(exc)
            return
        if path == "/ignore":  # never reads, never answers until cancelled
            await trio.sleep_forever()
        body = b""
        if path == "/echo":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        if path == "/early":  # answer without reading the body
            body = b"no"
        if path == "/big":
            body = b"x" * (1024 * 1024)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-path", path.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body or b"ok"})


async def test_settings_and_a_get(caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe()
    options = {"h2_max_concurrent_streams": 7, "h2_max_header_list_size": 9000}
    async with open_server(probe, **options) as server:
        client = await RawH2.open(server.port)
        settings = client.server_settings
        assert settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 7
        assert settings[SettingCodes.MAX_HEADER_LIST_SIZE] == 9000
        assert settings[SettingCodes.INITIAL_WINDOW_SIZE] == 256 * 1024
        assert settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        await client.send(
            client.headers(
                1, [*get("/a?b=c", authority="example.com"), (b"cookie", b"a=1")]
            ).serialize()
            + client.headers(3, [*get("/b"), (b"cookie", b"x=1"), (b"cookie", b"y=2")]).serialize()
        )
        first = await client.response(1)
        second = await client.response(3)
        await client.aclose()
    assert first["headers"][b":status"] == b"200"
    assert first["headers"][b"server"] == b"trioserve"
    assert b"date" in first["headers"]
    assert first["body"] == b"ok" and second["body"] == b"ok"
    scope, other = sorted(probe.scopes, key=lambda scope: scope["path"])
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert (scope["path"], scope["query_string"]) == ("/a", b"b=c")
    assert (b"host", b"example.com") in scope["headers"]
    assert (b"cookie", b"x=1; y=2") in other["headers"]


async def test_stream_over_the_limit_is_refused_and_the_connection_lives() -> None:
    probe = Probe()
    async with open_server(probe, h2_max_concurrent_streams=5) as server:
        client = await RawH2.open(server.port)
        await client.send(*(client.headers(sid, get("/hold")) for sid in range(1, 12, 2)))
        frame = await client.frame()
        assert isinstance(frame, RstStreamFrame)
        assert (frame.stream_id, frame.error_code) == (11, ErrorCodes.REFUSED_STREAM)
        probe.release.set()
        for sid in range(1, 10, 2):
            assert (await client.response(sid))["body"] == b"ok"
        await client.send(client.headers(13, get("/")))
        assert (await client.response(13))["body"] == b"ok"
        await client.aclose()
    assert probe.most == 5


async def test_rapid_reset_keeps_handlers_bounded_and_gets_enhance_your_calm() -> None:
    """CVE-2023-44487: reset streams' handlers still count until they end."""
    probe = Probe()
    options = {"h2_max_concurrent_streams": 10, "h2_reset_burst": 100, "h2_reset_rate": 10.0}
    async with open_server(probe, **options) as server:
        client = await RawH2.open(server.port)
        frames = []
        for sid in range(1, 2000, 2):
            frames += [client.headers(sid, get("/ignore"), end_stream=False), client.rst(sid)]
        await client.send(*frames)
        goaway = None
        while (frame := await client.frame_or_eof()) is not None:
            if isinstance(frame, GoAwayFrame):
                goaway = frame
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        # Another connection is served as usual.
        other = await RawH2.open(server.port)
        await other.send(other.headers(1, get("/")))
        assert (await other.response(1))["body"] == b"ok"
        await other.aclose()
    assert probe.most <= 10


async def test_server_resets_count_towards_the_budget() -> None:
    """MadeYouReset (CVE-2025-8671): streams the server must reset cost the same."""
    probe = Probe()
    options = {"h2_max_concurrent_streams": 1, "h2_reset_burst": 20, "h2_reset_rate": 1.0}
    async with open_server(probe, **options) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/hold")))
        await client.send(*(client.headers(sid, get("/")) for sid in range(3, 200, 2)))
        codes = []
        while (frame := await client.frame_or_eof()) is not None:
            if isinstance(frame, (RstStreamFrame, GoAwayFrame)):
                codes.append((type(frame).__name__, frame.error_code))
        probe.release.set()
    assert ("RstStreamFrame", ErrorCodes.REFUSED_STREAM) in codes
    assert codes[-1] == ("GoAwayFrame", ErrorCodes.ENHANCE_YOUR_CALM)


async def test_a_handler_that_does_not_read_does_not_freeze_the_connection() -> None:
    probe = Probe()
    async with open_server(probe, h2_stream_window=65535) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/hold"), end_stream=False))
        # Fill stream 1's whole window; its handler never reads.
        await client.send(
            *(client.data(1, b"x" * 16383) for _ in range(4)), client.data(1, b"xxx")
        )
        for sid in (3, 5):
            await client.send(client.headers(sid, get("/")))
            assert (await client.response(sid))["body"] == b"ok"
        probe.release.set()
        await client.aclose()


async def test_client_reset_disconnects_the_app_and_nothing_more_is_written() -> None:
    probe = Probe()
    async with open_server(probe, h2_reset_grace=0.2) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/wait-disconnect"), end_stream=False))
        await client.send(client.headers(3, post("/ignore"), end_stream=False))
        await trio.sleep(0.2)
        await client.send(client.rst(1), client.rst(3))
        await trio.sleep(0.5)
        await client.send(client.headers(5, get("/")))
        response = await client.response(5)
        await client.aclose()
    assert probe.messages[-1] == {"type": "http.disconnect"}
    assert len(probe.send_errors) == 1 and isinstance(probe.send_errors[0], OSError)
    assert probe.cancelled == 1  # /ignore, after the grace
    assert all(f.stream_id not in (1, 3) for f in response["others"])


async def test_early_answer_while_the_client_keeps_sending() -> None:
    """Hypercorn's trio worker dies here (KeyError on a closed stream)."""
    probe = Probe()
    async with open_server(probe) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/early"), end_stream=False))
        response = await client.response(1)
        assert response["body"] == b"no"
        await client.send(*(client.data(1, b"y" * 1000) for _ in range(5)))
        await client.send(client.data(1, b"", end_stream=True))
        await client.send(client.headers(3, get("/")))
        assert (await client.response(3))["body"] == b"ok"
        await client.aclose()


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], b"405"),
        (
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"bogus"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"h"),
            ],
            b"501",
        ),
    ],
)
async def test_connect_gets_an_error_response_not_a_crash(
    fields: list[tuple[bytes, bytes]], status: bytes
) -> None:
    probe = Probe()
    async with open_server(probe) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, fields, end_stream=False))
        assert (await client.response(1))["headers"][b":status"] == status
        await client.send(client.headers(3, get("/")))
        assert (await client.response(3))["body"] == b"ok"
        await client.aclose()
    assert probe.scopes[0]["path"] == "/"


async def test_header_list_over_the_advertised_size() -> None:
    async with open_server(Probe(), h2_max_header_list_size=4096) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, [*get("/"), (b"x-big", b"v" * 5000)]))
        frame = await client.frame()
        assert isinstance(frame, GoAwayFrame)
        assert frame.error_code == ErrorCodes.ENHANCE_YOUR_CALM


async def test_continuation_flood() -> None:
    async with open_server(Probe(), h2_max_header_list_size=4096) as server:
        client = await RawH2.open(server.port)
        head = client.headers(1, get("/"))
        head.flags.discard("END_HEADERS")
        await client.send(head, *(client.continuation(1, b"\x00" * 1000) for _ in range(30)))
        frame = await client.frame()
        assert isinstance(frame, GoAwayFrame)
        assert frame.error_code == ErrorCodes.ENHANCE_YOUR_CALM


async def test_ping_flood_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.error")
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        ping = PingFrame(0, opaque_data=b"12345678").serialize()
        try:
            for _ in range(50):
                await client.send(ping * 200)
        except trio.BrokenResourceError:
            pass
        acks = 0
        goaway = None
        while (frame := await client.frame_or_eof()) is not None:
            if isinstance(frame, PingFrame):
                acks += 1
            elif isinstance(frame, GoAwayFrame):
                goaway = frame
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert acks <= 1000
    errors = [r for r in caplog.records if "HTTP/2 connection error" in r.getMessage()]
    assert len(errors) == 1 and "too many control frames" in errors[0].getMessage()


async def test_protocol_error_gets_goaway_protocol_error() -> None:
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        await client.send(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00nope")  # DATA on stream 0
        frame = await client.frame()
        assert isinstance(frame, GoAwayFrame) and frame.error_code == ErrorCodes.PROTOCOL_ERROR
        assert await client.frame_or_eof() is None


async def test_bad_preface() -> None:
    async with open_server(Probe()) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + SettingsFrame(0).serialize())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
        await stream.aclose()
        # Our SETTINGS, then GOAWAY PROTOCOL_ERROR, then the close.
        assert data[3] == 0x4
        assert data.endswith(
            b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(4) + b"\x00\x00\x00\x01"
        )


async def test_idle_connection_gets_goaway() -> None:
    async with open_server(Probe(), keep_alive_timeout=0.3) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/")))
        await client.response(1)
        with trio.fail_after(3):
            frame = await client.frame()
        assert isinstance(frame, GoAwayFrame)
        assert (frame.error_code, frame.last_stream_id) == (ErrorCodes.NO_ERROR, 1)
        assert await client.frame_or_eof() is None


async def test_keep_alive_max_requests() -> None:
    async with open_server(Probe(), keep_alive_max_requests=2) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/")), client.headers(3, get("/")))
        await client.response(1)
        await client.response(3)
        goaways = [f for f in client.control if isinstance(f, GoAwayFrame)]
        if not goaways:
            goaways = [await client.frame()]
        assert goaways[0].last_stream_id == 3
        assert await client.frame_or_eof() is None


async def test_graceful_shutdown_finishes_streams_and_refuses_new_ones() -> None:
    probe = Probe()
    async with stoppable(probe, graceful_timeout=5) as (port, trigger, _):
        client = await RawH2.open(port)
        await client.send(client.headers(1, get("/hold")))
        await trio.sleep(0.2)
        trigger.set()
        frame = await client.frame()
        assert isinstance(frame, GoAwayFrame) and frame.last_stream_id == 1
        await client.send(client.headers(3, get("/")))
        refused = await client.frame()
        assert isinstance(refused, RstStreamFrame)
        assert refused.error_code == ErrorCodes.REFUSED_STREAM
        probe.release.set()
        assert (await client.response(1))["body"] == b"ok"
        assert await client.frame_or_eof() is None


async def test_shutdown_deadline_holds_against_a_client_that_stopped_reading() -> None:
    probe = Probe()
    async with stoppable(probe, graceful_timeout=0.5) as (port, trigger, stopped):
        # Initial window 0: no response body can ever be sent.
        client = await RawH2.open(port, {SettingCodes.INITIAL_WINDOW_SIZE: 0})
        await client.send(client.headers(1, get("/big")))
        await trio.sleep(0.2)
        with trio.fail_after(3):
            trigger.set()
            await stopped.wait()
    assert probe.cancelled == 1


async def test_prior_knowledge_preface_split_across_reads() -> None:
    async with open_server(Probe()) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(PREFACE[:10])
        await trio.sleep(0.1)
        client = await RawH2.open(server.port, stream=stream, handshake=False)
        assert isinstance(await client.frame(), SettingsFrame)


async def test_headers_frame_sent_for_head_and_empty_bodies() -> None:
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, [(b":method", b"HEAD"), *get("/")[1:]]))
        frame = await client.frame()
        while not isinstance(frame, HeadersFrame):
            frame = await client.frame()
        assert "END_STREAM" in frame.flags
        await client.aclose()


# -- more RFC 9113 / RFC 7541 behaviour ----------------------------------------------------------
async def test_ping_is_acknowledged_with_its_payload_and_settings_are_acked() -> None:
    """RFC 9113 6.5.3 and 6.7."""
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        settings = SettingsFrame(0)
        settings.settings[SettingCodes.HEADER_TABLE_SIZE] = 0  # 6.5.2, RFC 7541 4.2
        await client.send(settings, PingFrame(0, opaque_data=b"abcdefgh"))
        seen: list[Any] = []
        while not (
            any(isinstance(f, SettingsFrame) for f in seen)
            and any(isinstance(f, PingFrame) for f in seen)
        ):
            seen.append(await client.frame(everything=True))
        ack = next(f for f in seen if isinstance(f, SettingsFrame))
        pong = next(f for f in seen if isinstance(f, PingFrame))
        assert "ACK" in ack.flags and not ack.settings
        assert "ACK" in pong.flags and pong.opaque_data == b"abcdefgh"
        # With a zero-sized table the server's HPACK still decodes for us.
        await client.send(client.headers(1, get("/")))
        assert (await client.response(1))["body"] == b"ok"


def _raw(length: int, kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return length.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # 5.1.1: a client stream id must be odd.
        (lambda c: c.headers(2, get("/")).serialize(), ErrorCodes.PROTOCOL_ERROR),
        # 6.9: a zero WINDOW_UPDATE on the connection.
        (lambda c: _raw(4, 0x8, 0, 0, bytes(4)), ErrorCodes.PROTOCOL_ERROR),
        # 6.9.1: the connection window past 2^31-1.
        (
            lambda c: _raw(4, 0x8, 0, 0, (2**31 - 1).to_bytes(4, "big")),
            ErrorCodes.FLOW_CONTROL_ERROR,
        ),
        # 6.5: a SETTINGS frame whose length is not a multiple of 6.
        (lambda c: _raw(5, 0x4, 0, 0, bytes(5)), ErrorCodes.FRAME_SIZE_ERROR),
        # 6.7: a PING that is not 8 bytes.
        (lambda c: _raw(4, 0x6, 0, 0, bytes(4)), ErrorCodes.FRAME_SIZE_ERROR),
        # 6.2: HEADERS on stream 0.
        (lambda c: _raw(1, 0x1, 0x5, 0, b"\x82"), ErrorCodes.PROTOCOL_ERROR),
        # (Malformed heads, 8.1.1, are a stream's 400: test_http2_malformed.py.)
        # RFC 7541 2.3.3: an index past the tables is a COMPRESSION_ERROR.
        (lambda c: _raw(1, 0x1, 0x5, 1, b"\xff\x7f"), ErrorCodes.COMPRESSION_ERROR),
    ],
    ids=[
        "even-stream",
        "zero-window-update",
        "window-overflow",
        "settings-length",
        "ping-length",
        "headers-stream-0",
        "hpack-index",
    ],
)
async def test_connection_errors_get_goaway_with_the_rfc_code(frames: Any, code: int) -> None:
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        await client.send(frames(client))
        frame = await client.frame()
        assert isinstance(frame, GoAwayFrame), frame
        assert frame.error_code == code
        assert await client.frame_or_eof() is None
        # The server itself is unharmed.
        other = await RawH2.open(server.port)
        await other.send(other.headers(1, get("/")))
        assert (await other.response(1))["body"] == b"ok"


async def test_frames_on_a_reset_stream_and_unknown_frames_are_ignored() -> None:
    """RFC 9113 5.1 (closed after RST_STREAM) and 4.1 / 5.5 (unknown frame types)."""
    async with open_server(Probe()) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/echo"), end_stream=False))
        await client.send(client.rst(1))
        await client.send(client.data(1, b"late"), _raw(3, 0xBB, 0, 0, b"xyz"))
        await client.send(client.headers(3, get("/")))
        response = await client.response(3)
        assert response["body"] == b"ok"


async def test_idle_tls_connection_gets_goaway(tmp_path: Any) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    options = {
        "certfile": str(tmp_path / "cert.pem"),
        "keyfile": str(tmp_path / "key.pem"),
        "keep_alive_timeout": 0.3,
    }
    async with open_server(Probe(), **options) as server:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols(["h2"])
        tls = await trio.open_ssl_over_tcp_stream("127.0.0.1", server.port, ssl_context=context)
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2"
        client = await RawH2.open(server.port, stream=tls)
        await client.send(client.headers(1, get("/")))
        await client.response(1)
        with trio.fail_after(3):
            frame = await client.frame()
        assert isinstance(frame, GoAwayFrame) and frame.error_code == ErrorCodes.NO_ERROR


async def test_body_over_the_limit_gets_413_while_the_client_keeps_sending() -> None:
    """Hypercorn's trio worker dies here: a 413 answered early, DATA still arriving."""
    probe = Probe()
    async with open_server(probe, max_request_body_size=100) as server:
        client = await RawH2.open(server.port)
        fields = [*post("/echo"), (b"content-length", b"100000")]
        await client.send(client.headers(1, fields, end_stream=False))
        await client.send(*(client.data(1, b"z" * 10000) for _ in range(6)))
        response = await client.response(1)
        assert response["headers"][b":status"] == b"413"
        await client.send(*(client.data(1, b"z" * 10000) for _ in range(4)))
        await client.send(client.headers(3, [*post("/echo")], end_stream=False))
        await client.send(client.data(3, b"a" * 200, end_stream=True))  # streamed: over too
        second = await client.response(3)
        assert second["headers"][b":status"] == b"413" or second.get("reset") is not None
        await client.send(client.headers(5, get("/")))
        assert (await client.response(5))["body"] == b"ok"


async def test_keep_alive_off_serves_one_stream_then_goaway() -> None:
    async with open_server(Probe(), keep_alive_timeout=0) as server:
        client = await RawH2.open(server.port)
        await trio.sleep(0.3)  # no request yet: the connection waits for one
        await client.send(client.headers(1, get("/")))
        assert (await client.response(1))["body"] == b"ok"
        frames = [*client.control]
        while (frame := await client.frame_or_eof()) is not None:
            frames.append(frame)
        goaway = next(f for f in frames if isinstance(f, GoAwayFrame))
        assert goaway.last_stream_id == 1


async def test_max_inbound_frame_size_is_advertised_and_honoured() -> None:
    probe = Probe()
    async with open_server(probe, h2_max_inbound_frame_size=32768) as server:
        client = await RawH2.open(server.port)
        assert client.server_settings[SettingCodes.MAX_FRAME_SIZE] == 32768
        await client.send(client.headers(1, post("/echo"), end_stream=False))
        await client.send(client.data(1, b"q" * 30000, end_stream=True))  # over 16384: fine
        assert (await client.response(1))["body"] == b"q" * 30000
        await client.send(client.headers(3, post("/echo"), end_stream=False))
        await client.send(client.data(3, b"q" * 40000, end_stream=True))  # over 32768
        frame = await client.frame()
        while not isinstance(frame, GoAwayFrame):
            frame = await client.frame()
        assert frame.error_code == ErrorCodes.FRAME_SIZE_ERROR


async def test_shutdown_deadline_holds_when_the_client_stops_reading_the_socket() -> None:
    """Windows wide open, then no reads at all: the writer blocks in the kernel, and the
    graceful deadline still ends the connection (no write is shielded)."""
    probe = Probe()
    async with stoppable(probe, graceful_timeout=0.5) as (port, trigger, stopped):
        client = await RawH2.open(port, {SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        await client.send(client.window_update(0, 2**31 - 65536))
        await client.send(*(client.headers(sid, get("/big")) for sid in range(1, 40, 2)))
        await trio.sleep(0.5)  # 20 MiB asked for; the socket buffers fill up
        with trio.fail_after(5):
            trigger.set()
            await stopped.wait()


async def test_a_stream_without_window_does_not_block_the_others() -> None:
    probe = Probe()
    async with open_server(probe) as server:
        client = await RawH2.open(server.port)
        await client.send(client.window_update(0, 2**30))  # connection: plenty
        await client.send(client.headers(1, get("/big")))  # its stream window: 65535 only
        received = 0
        while received < 65535:
            frame = await client.frame()
            if isinstance(frame, DataFrame) and frame.stream_id == 1:
                received += len(frame.data)
        await client.send(client.headers(3, get("/")))
        response = await client.response(3)
        assert response["body"] == b"ok"
        assert not any(isinstance(f, DataFrame) and f.stream_id == 1 for f in response["others"])


async def test_streams_take_turns_on_the_wire() -> None:
    probe = Probe()
    async with open_server(probe) as server:
        client = await RawH2.open(server.port, {SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        await client.send(client.window_update(0, 2**31 - 65536))
        await client.send(client.headers(1, get("/big")), client.headers(3, get("/big")))
        order: list[int] = []
        ended = 0
        while ended < 2:
            frame = await client.frame()
            if isinstance(frame, DataFrame):
                order.append(frame.stream_id)
                ended += "END_STREAM" in frame.flags
        # Neither stream waits for the other's megabyte: they interleave from the start.
        first_half = order[: len(order) // 2]
        assert first_half.count(1) > len(first_half) // 4
        assert first_half.count(3) > len(first_half) // 4


async def test_random_frames_never_take_down_the_server(caplog: pytest.LogCaptureFixture) -> None:
    """Hypercorn's trio worker lets one odd frame escape into the server nursery. Here 40
    connections of random frames each end at worst in a GOAWAY, with no unexpected error
    logged, and the server keeps serving."""
    import random

    caplog.set_level(logging.DEBUG, "trioserve.error")
    rng = random.Random(1414)
    async with open_server(Probe(), h2_max_concurrent_streams=4) as server:
        for _ in range(40):
            client = await RawH2.open(server.port)
            frames = [client.headers(1, get("/"), end_stream=False).serialize()]
            for _ in range(rng.randint(1, 30)):
                payload = rng.randbytes(rng.randint(0, 24))
                stream = rng.choice([0, 1, 3, 5, 2**31 - 1])
                frames.append(
                    _raw(len(payload), rng.randint(0, 11), rng.randint(0, 255), stream, payload)
                )
            try:
                await client.send(*frames)
                while await client.frame_or_eof(timeout=2) is not None:
                    pass
            except (trio.BrokenResourceError, trio.TooSlowError):
                pass
            await client.aclose()
        other = await RawH2.open(server.port)
        await other.send(other.headers(1, get("/")))
        assert (await other.response(1))["body"] == b"ok"
    assert not [r for r in caplog.records if "Unexpected error" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
