"""The pull model of the WebSocket path: receive() reads the socket itself, and a pump
reads for an app that stays away from receive() (streaming out, busy, stuck).

Real loopback sockets; raw wsproto clients where the test needs to see frames."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from trioserve.errors import ClientDisconnected
from trioserve.sansio.wsframes import EventQueue
from trioserve.server import wswatch
from trioserve.testing import open_server

from ..sansio.test_websocket import accepted, client
from .test_websocket import (
    check_the_reading_stops,
    connect,
    echo,
    handshake,
    next_events,
    raw_ws,
    read_head,
    ws_app,
)


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short watchdog interval so pumps start within a fraction of a second."""
    monkeypatch.setattr(wswatch, "WATCH_INTERVAL", 0.05)
    return 0.05


async def test_send_only_app_sees_the_client_close(fast_watch: float) -> None:
    """An app that never calls receive() still learns that the client closed: the pump
    reads the close, answers it, and the app's next send() raises."""
    errors: list[BaseException] = []
    sent = 0
    done = trio.Event()

    async def streamer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sent
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                sent += 1
                await trio.sleep(0.01)
        except OSError as exc:
            errors.append(exc)
        finally:
            done.set()

    async with open_server(ws_app(streamer)) as server:
        async with raw_ws(server.port) as (stream, conn, rest):
            with trio.fail_after(5):
                events = await next_events(stream, conn, rest)
            assert isinstance(events[0], TextMessage)
            await stream.send_all(conn.send(CloseConnection(code=1000, reason="bye")))
            # The server answers the close although its app only sends.
            seen: list[Any] = []
            with trio.fail_after(5):
                while not any(isinstance(e, CloseConnection) for e in seen):
                    seen += await next_events(stream, conn)
        with trio.fail_after(5):
            await done.wait()
    assert isinstance(errors[0], ClientDisconnected)
    assert sent > 0


async def test_send_only_app_sees_the_client_close_promptly() -> None:
    """Without waiting for the watchdog (1 s): an app that sends twice without receiving
    gets a pump at once, so its next send() after the client's close raises."""
    assert wswatch.WATCH_INTERVAL >= 1
    closed_at: list[float] = []
    raised_at: list[float] = []

    async def streamer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                await trio.sleep(0.01)
        except OSError:
            raised_at.append(trio.current_time())

    async with open_server(ws_app(streamer)) as server:
        async with raw_ws(server.port) as (stream, conn, rest):
            with trio.fail_after(5):
                await next_events(stream, conn, rest)
            await trio.sleep(0.05)
            closed_at.append(trio.current_time())
            await stream.send_all(conn.send(CloseConnection(code=1000, reason="bye")))
            with trio.fail_after(5):
                while not raised_at:
                    await trio.sleep(0.01)
        assert raised_at[0] - closed_at[0] < 0.5


async def test_pings_are_answered_while_the_app_is_away(fast_watch: float) -> None:
    release = trio.Event()
    received: list[dict[str, Any]] = []

    async def busy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()  # away from receive() for a while
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "websocket.disconnect":
                return

    server_cm = open_server(ws_app(busy))
    async with server_cm as server, raw_ws(server.port) as (stream, conn, rest):
        await stream.send_all(conn.send(TextMessage(data="first")))
        await stream.send_all(conn.send(Ping(payload=b"are you there")))
        with trio.fail_after(5):
            events = await next_events(stream, conn, rest)
        assert events == [Pong(payload=b"are you there")]
        # What the pump read meanwhile reaches the app, in order, when it comes back.
        await stream.send_all(conn.send(TextMessage(data="second")))
        release.set()
        with trio.fail_after(5):
            while len(received) < 2:
                await trio.sleep(0.01)
        await stream.send_all(conn.send(CloseConnection(code=1000)))
        with trio.fail_after(5):
            while len(received) < 3:
                await trio.sleep(0.01)
    assert received == [
        {"type": "websocket.receive", "text": "first"},
        {"type": "websocket.receive", "text": "second"},
        {"type": "websocket.disconnect", "code": 1000, "reason": ""},
    ]


async def test_the_pump_stops_at_the_queue_limit(fast_watch: float) -> None:
    """A pump reads at most max_app_queue_size messages ahead: then TCP pushes back."""
    # Many watchdog intervals in the settling time: the pump ran and stopped.
    await check_the_reading_stops(total=48)


async def test_server_pings_time_out_while_the_app_is_away(
    fast_watch: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.error")
    errors: list[BaseException] = []
    done = trio.Event()

    async def away(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await trio.sleep(1.5)
            await send({"type": "websocket.send", "text": "late"})
        except OSError as exc:
            errors.append(exc)
        finally:
            done.set()

    options = {"websocket_ping_interval": 0.1, "websocket_ping_timeout": 0.2}
    async with open_server(ws_app(away), **options) as server:
        async with raw_ws(server.port) as (stream, conn, rest):
            seen: list[Any] = []
            with trio.fail_after(5):  # we never answer the pings
                while not any(isinstance(e, CloseConnection) for e in seen):
                    seen += await next_events(stream, conn, rest)
                    rest = b""
        with trio.fail_after(5):
            await done.wait()
    assert isinstance(seen[0], Ping)
    assert seen[-1].code == 1011
    assert isinstance(errors[0], ClientDisconnected)
    assert any("no pong" in r.getMessage() for r in caplog.records)


async def test_two_tasks_receiving_share_the_messages() -> None:
    """One reader at a time: concurrent receive() calls each get whole messages, in
    order, none lost or duplicated."""
    got: list[str] = []
    n = 200

    async def fan_in(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

        async def worker() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                got.append(message["text"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)

    async with open_server(ws_app(fan_in)) as server, connect(server.ws_url) as ws:
        for i in range(n):
            await ws.send_message(f"{i}")
        with trio.fail_after(5):
            while len(got) < n:
                await trio.sleep(0.01)
    assert sorted(got, key=int) == [f"{i}" for i in range(n)]


async def test_receive_before_accept_waits_for_the_accept() -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect

        async def listener() -> None:
            received.append(await receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener)
            await trio.sleep(0.1)
            assert not received
            await send({"type": "websocket.accept"})

    async with open_server(ws_app(app)) as server, connect(server.ws_url) as ws:
        await ws.send_message("after accept")
        with trio.fail_after(5):
            while not received:
                await trio.sleep(0.01)
    assert received == [{"type": "websocket.receive", "text": "after accept"}]


async def test_a_stuck_app_still_sends_1001_at_shutdown() -> None:
    async def stuck(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep_forever()

    codes: list[int] = []
    async with trio.open_nursery() as nursery:
        ready = trio.Event()

        async def client(url: str) -> None:
            async with connect(url) as ws:
                ready.set()
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                codes.append(info.value.reason.code)

        async with open_server(ws_app(stuck), graceful_timeout=0.5) as server:
            nursery.start_soon(client, server.ws_url)
            await ready.wait()
    assert codes == [1001]


def _tasks_under(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    out = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            out.extend(_tasks_under(child))
    return out


async def test_an_idle_websocket_is_one_task() -> None:
    """No reader task, channel or nursery per WebSocket: idle ones add one task each
    (the connection's), plus one watchdog for the whole server."""
    root = trio.lowlevel.current_root_task()
    assert root is not None

    def server_tasks() -> list[str]:
        return [t.name for t in _tasks_under(root) if t.name.startswith("trioserve.")]

    k = 5
    async with open_server(echo) as server:
        before = server_tasks()
        streams = []
        try:
            for _ in range(k):
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                streams.append(stream)
                await stream.send_all(handshake())
                head, rest = await read_head(stream)
                assert head.startswith(b"HTTP/1.1 101 ")
                client = Connection(ConnectionType.CLIENT)
                await stream.send_all(client.send(TextMessage(data="idle")))
                with trio.fail_after(5):
                    assert (await next_events(stream, client, rest))[0].data == "idle"
            await trio.sleep(0.05)
            after = server_tasks()
        finally:
            for stream in streams:
                await stream.aclose()
    conn_task = "trioserve.server.serve._handle_connection"
    assert after.count(conn_task) - before.count(conn_task) == k
    assert after.count("trioserve.server.wswatch.Watchdog._run") == 1
    # The keep-alive waits' task, one for the whole server too, starts with the first
    # connection's wait for its request (server/keepalive.py).
    reaper = "trioserve.keep_alive_waits"
    assert after.count(reaper) == 1
    assert len(after) - len(before) == k + 1 + 1 - before.count(reaper), (before, after)


def test_wsproto_event_deque_is_replaced_and_still_works() -> None:
    """The session swaps wsproto's (nearly always empty, ~620-byte) event deque for a
    small list; a wsproto that changed its internals must make this test fail, not the
    server. The swapped queue carries wsproto's own event (the 1006 close at EOF)."""
    session, head = accepted()
    assert head.startswith(b"HTTP/1.1 101 ")
    conn = session.conn
    assert conn is not None
    assert type(conn._events) is EventQueue
    peer = client()
    session.receive_data(peer.send(TextMessage(data="one")) + peer.send(TextMessage(data="two")))
    assert session.app_messages() == [
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.receive", "text": "two"},
    ]
    session.receive_data(None)  # EOF: wsproto queues its CloseConnection(1006) there
    assert session.app_messages() == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


# -- frames parsed without wsproto must give exactly what wsproto gives ----------------------
_client_events = st.one_of(
    st.builds(lambda t: TextMessage(data=t), st.text(max_size=300)),
    st.builds(lambda b: BytesMessage(data=b), st.binary(max_size=300)),
    st.builds(lambda b: Ping(payload=b), st.binary(max_size=20)),
    st.builds(lambda t: TextMessage(data=t, message_finished=False), st.text(max_size=20)),
    st.just(BytesMessage(data=b"x" * 70000)),  # a 64-bit length: wsproto's
)


def _wire(events: list[Any]) -> bytes:
    """What a client writes for ``events``; an unfinished message is finished by the next
    data event of the same kind (wsproto's client refuses anything else)."""
    peer = client()
    out = b""
    open_kind: type | None = None
    for event in events:
        kind = type(event)
        if open_kind is not None and kind is not Ping and kind is not open_kind:
            out += peer.send(open_kind(data="" if open_kind is TextMessage else b""))
            open_kind = None
        out += peer.send(event)
        if kind is not Ping:
            open_kind = None if event.message_finished else kind
    return out


def _run_session(wire: bytes, cuts: list[int], plain: bool, max_size: int) -> Any:
    session, _ = accepted(max_size=max_size)
    session._plain = plain
    messages: list[dict[str, Any]] = []
    replies = b""
    last = 0
    for cut in [*sorted(cuts), len(wire)]:
        session.receive_data(wire[last:cut])
        last = max(last, cut)
        messages += session.app_messages()
        replies += session.data_to_send()
    return messages, replies, session.disconnect


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_client_events, max_size=12),
    st.lists(st.integers(min_value=0, max_value=80000), max_size=6),
    st.sampled_from([1 << 20, 100]),
    st.booleans(),
)
def test_simple_frames_match_wsproto(
    events: list[Any], cuts: list[int], max_size: int, corrupt: bool
) -> None:
    wire = _wire(events)
    if corrupt and wire:
        # One byte of the masked stream flipped: bad UTF-8, bad opcodes, bad lengths...
        index = len(wire) // 2
        wire = wire[:index] + bytes([wire[index] ^ 0x5A]) + wire[index + 1 :]
    fast = _run_session(wire, cuts, True, max_size)
    slow = _run_session(wire, cuts, False, max_size)
    assert fast == slow


def test_simple_frames_are_taken_without_wsproto() -> None:
    """The fast path is really used for a plain text frame (and replies are identical)."""
    session, _ = accepted()
    assert session._plain
    peer = client()
    session.receive_data(
        peer.send(TextMessage(data="héllo")) + peer.send(BytesMessage(data=b"\0"))
    )
    assert session._ready == [
        {"type": "websocket.receive", "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\0"},
    ]
    assert session.app_messages() == [
        {"type": "websocket.receive", "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\0"},
    ]
    frame = session.app_message({"type": "websocket.send", "text": "é" * 100})
    peer.receive_data(frame)
    assert [e.data for e in peer.events()] == ["é" * 100]
    big = session.app_message({"type": "websocket.send", "bytes": b"z" * 70000})
    peer.receive_data(big)
    assert b"".join(e.data for e in peer.events()) == b"z" * 70000
