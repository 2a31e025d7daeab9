"""Raw HTTP/3 scenarios with aioquic's client: cancels, STOP_SENDING, CONNECT, floods,
backpressure. Each checks the server keeps serving afterwards."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.h3client import h3_client

from .conftest import Certs, h3_server, h3_session

H3_REQUEST_CANCELLED = 0x10C
H3_REQUEST_REJECTED = 0x10B


def hello_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    return app


class Streaming:
    """An app that streams until told the client is gone, recording what it saw."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.finished = trio.Event()
        self.send_error: BaseException | None = None
        self.receive_messages: list[dict[str, Any]] = []
        self.chunks_sent = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hello":
            await hello_app()(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.started.set()
            while True:
                await send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True})
                self.chunks_sent += 1
                await trio.sleep(0.001)
        except OSError as exc:
            self.send_error = exc
            self.receive_messages.append(await receive())
            self.receive_messages.append(await receive())
        finally:
            self.finished.set()


async def test_client_cancel_mid_response(certs: Certs) -> None:
    """RESET_STREAM + STOP_SENDING (a browser's cancel): send() raises an OSError, receive()
    says http.disconnect, the server resets its side, and the connection keeps serving."""
    app = Streaming()
    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/stream")
        with trio.fail_after(5):
            await app.started.wait()
        await client.wait(stream_id, until=lambda r: len(r.body) > 0)
        client.cancel(stream_id)
        with trio.fail_after(5):
            await app.finished.wait()
        assert isinstance(app.send_error, OSError)
        assert app.receive_messages == [{"type": "http.disconnect"}] * 2
        result = await client.wait(stream_id, until=lambda r: r.reset is not None)
        assert result.reset == H3_REQUEST_CANCELLED
        received = len(result.body)
        await trio.sleep(0.2)
        assert len(client.streams[stream_id].body) == received  # nothing more was sent
        again = await client.request(b"/hello")
        assert (again.status, bytes(again.body)) == (200, b"hello")


async def test_stop_sending_only(certs: Certs) -> None:
    app = Streaming()
    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/stream")
        with trio.fail_after(5):
            await app.started.wait()
        client.cancel(stream_id, reset=False, stop=True)
        with trio.fail_after(5):
            await app.finished.wait()
        assert isinstance(app.send_error, OSError)
        assert app.receive_messages[-1] == {"type": "http.disconnect"}
        again = await client.request(b"/hello")
        assert again.status == 200


async def test_reset_only_while_app_waits_for_body(certs: Certs) -> None:
    seen: list[dict[str, Any]] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect":
                break
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
        except OSError:
            seen.append({"type": "send raised"})
        done.set()

    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/upload", method=b"POST", body=b"a" * 1000, end=False)
        await trio.sleep(0.2)
        client.cancel(stream_id, reset=True, stop=False)
        with trio.fail_after(5):
            await done.wait()
        assert seen[0] == {"type": "http.request", "body": b"a" * 1000, "more_body": True}
        assert seen[-2:] == [{"type": "http.disconnect"}, {"type": "send raised"}]


async def test_reset_app_cancelled_after_grace(certs: Certs) -> None:
    """An app that ignores the disconnect is cancelled after the reset grace."""
    cancelled = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            cancelled.set()
            raise

    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/slow")
        await trio.sleep(0.1)
        client.cancel(stream_id)
        with trio.fail_after(5):
            await cancelled.wait()


async def test_connect_and_protocol_refused(certs: Certs) -> None:
    async with h3_session(hello_app(), certs) as (_, client):
        plain = await client.wait(
            client.open(fields=[(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
        )
        assert plain.status == 405
        ws = await client.wait(
            client.open(
                fields=[
                    (b":method", b"CONNECT"),
                    (b":protocol", b"websocket"),
                    (b":authority", b"localhost"),
                ]
            )
        )
        assert ws.status == 400  # extended CONNECT without :path or :scheme
        unknown = await client.wait(
            client.open(
                fields=[
                    (b":method", b"CONNECT"),
                    (b":protocol", b"bogus"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/"),
                ]
            )
        )
        assert unknown.status == 501
        again = await client.request(b"/hello")
        assert again.status == 200


async def test_malformed_head_is_refused_on_its_stream_only(certs: Certs) -> None:
    """:scheme https without :path is malformed: aioquic would end the connection
    (H3_MESSAGE_ERROR); the shared request rules answer that stream 400 and the connection
    carries on (every malformed case: test_malformed.py)."""
    async with h3_session(hello_app(), certs) as (_, client):
        bad = client.open(
            fields=[
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
            ]
        )
        assert (await client.wait(bad)).status == 400
        assert client.terminated is None
        assert (await client.request(b"/hello")).status == 200


async def test_app_error_gives_500_and_partial_gives_reset(certs: Certs) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/partial":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    async with h3_session(app, certs) as (_, client):
        failed = await client.request(b"/fail")
        assert failed.status == 500
        partial = await client.request(b"/partial")
        assert partial.reset == 0x102  # H3_INTERNAL_ERROR


async def test_stream_flood_is_bounded(certs: Certs) -> None:
    """More streams than h3_max_concurrent_streams: the client's QUIC credit stops it;
    all requests still complete as slots free up."""
    running = 0
    peak = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal running, peak
        if scope["type"] != "http":
            return
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.05)
        running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with h3_session(app, certs, h3_max_concurrent_streams=5) as (_, client):
        ids = []
        for _ in range(5):
            ids.append(client.open(b"/"))
        for stream_id in ids:
            assert (await client.wait(stream_id)).status == 200
        assert peak <= 5
        # Past the advertised credit, aioquic's client refuses to open a stream itself;
        # a second wave after the first completes is served.
        results = []
        for _ in range(5):
            results.append(await client.request(b"/"))
        assert [r.status for r in results] == [200] * 5


async def test_reset_handlers_still_count_against_the_limit(certs: Certs) -> None:
    """Reset streams whose apps are still in their grace period hold their slots: the
    client gets no new stream credit (MAX_STREAMS) until the grace cancels them."""
    running = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal running
        if scope["type"] != "http":
            return
        if scope["path"] == "/hello":
            await hello_app()(scope, receive, send)
            return
        running += 1
        try:
            await trio.sleep(60)  # ignores the disconnect: only the grace's cancel ends it
        finally:
            running -= 1

    options = {"h3_max_concurrent_streams": 2, "h2_reset_grace": 1.0}
    async with h3_session(app, certs, **options) as (_, client):
        first = [client.open(b"/stuck"), client.open(b"/stuck")]
        await trio.sleep(0.2)
        assert running == 2
        for stream_id in first:
            client.cancel(stream_id)
        waiting = client.open(b"/hello")  # blocked in the client: no credit yet
        await trio.sleep(0.5)  # the resets are acknowledged; aioquic alone would grant two
        assert running == 2
        assert not client.streams[waiting].headers
        result = await client.wait(waiting, timeout=5)
        assert result.headers, (result.reset, result.ended, client.terminated)
        assert result.status == 200
        assert running == 0


async def test_garbage_datagrams_do_not_stop_serving(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """Random bytes, truncated and corrupted Initials, odd versions: every connection and
    the socket carry on."""
    import random
    import socket

    from trioserve.logs import error_log

    from .test_limits import initial_datagram

    error_log.addHandler(caplog.handler)  # whether or not the logger propagates
    rng = random.Random(15)
    async with h3_server(hello_app(), certs, quic_retry="off") as server:
        async with h3_client(server.port, str(certs.ca_file)) as client:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                good = initial_datagram(certs)
                samples = [b"", b"\x00", b"\xc0" * 5, good[:40], good[:1199]]
                for _ in range(200):
                    size = rng.choice([1, 20, 100, 1200, 1500])
                    samples.append(bytes(rng.getrandbits(8) for _ in range(size)))
                    mutated = bytearray(good)
                    for _ in range(5):
                        mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
                    samples.append(bytes(mutated))
                for sample in samples:
                    await sock.sendto(sample, ("127.0.0.1", server.port))
            assert (await client.request(b"/hello")).status == 200
        async with h3_client(server.port, str(certs.ca_file)) as fresh:
            assert (await fresh.request(b"/hello")).status == 200
    error_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_stop_sending_during_upload_stops_the_upload_too(certs: Certs) -> None:
    """A client that stops our response while still uploading is asked to stop its body
    (STOP_SENDING H3_REQUEST_CANCELLED): nobody will read it."""
    from aioquic.quic.events import StopSendingReceived

    app = Streaming()
    async with h3_session(app, certs) as (_, client):
        stream_id = client.open(b"/stream", method=b"POST", body=b"a" * 100, end=False)
        with trio.fail_after(5):
            await app.started.wait()
        client.cancel(stream_id, reset=False, stop=True)
        with trio.fail_after(5):
            while not any(
                isinstance(e, StopSendingReceived) and e.stream_id == stream_id
                for e in client.events
            ):
                await trio.sleep(0.02)
        stop = next(e for e in client.events if isinstance(e, StopSendingReceived))
        assert stop.error_code == H3_REQUEST_CANCELLED
        assert (await client.request(b"/hello")).status == 200
