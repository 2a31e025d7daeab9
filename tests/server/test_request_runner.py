"""The version-independent request runner, against a scripted fake connection (no sockets).

The fake implements :class:`~trioserve.server.request.RequestPort` the way an HTTP/2 stream
would: body pieces come from a script, written events are recorded, and the peer leaves
when the test says so. Every rule the runner owns is checked here once for every version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest
import trio

from trioserve.errors import ClientDisconnected
from trioserve.sansio.body import NOT_YET, BodyPiece
from trioserve.sansio.events import (
    Data,
    EndData,
    InformationalResponse,
    OutboundEvent,
    ProtocolError,
    Request,
    Response,
    Sentinel,
)
from trioserve.server.request import (
    DONE_NORMALLY,
    LEAVE_BODY_UNREAD,
    REFUSED,
    RequestPort,
    RequestRunner,
)
from trioserve.server.state import ServerState
from trioserve.server.transport import ConnectionInfo
from trioserve.testing.live import make_test_config

INFO = ConnectionInfo(client=("192.0.2.1", 4000), server=("127.0.0.1", 8000))


class FakePort:
    """Body pieces from ``script`` (``NOT_YET`` makes the runner wait for the next one)."""

    def __init__(self, script: list[Any] | None = None, *, frame_error: bool = False) -> None:
        self.script = list(script or [(b"", False)])
        self.frame_error = frame_error
        self.sent: list[OutboundEvent] = []
        self.framed: list[list[str]] = []  # each send_events() call's event types, as framed
        self.gone = False
        self.waits = 0  # receive_body() calls
        self.closing = False
        self.aborted = False
        self.refusal: tuple[int, str | None] | None = None
        self.left = trio.Event()

    @property
    def can_inform(self) -> bool:
        return not self.gone and not any(type(e) is Response for e in self.sent)

    def body_piece(self) -> BodyPiece | Sentinel:
        return self.script.pop(0)  # type: ignore[no-any-return]

    async def receive_body(self, timeout: float | None) -> BodyPiece:
        self.waits += 1
        await trio.lowlevel.checkpoint()
        return self.script.pop(0)  # type: ignore[no-any-return]

    def send_events(self, events: list[OutboundEvent]) -> Awaitable[None]:
        if self.frame_error:
            raise ProtocolError("cannot frame that")
        self.framed.append([type(event).__name__ for event in events])
        return self._write(events)

    async def _write(self, events: list[OutboundEvent]) -> None:
        await trio.lowlevel.checkpoint()
        if self.gone:
            raise ClientDisconnected("gone")
        self.sent.extend(events)

    async def wait_disconnected(self) -> None:
        await self.left.wait()
        self.gone = True

    def poll_disconnected(self) -> bool:
        return self.gone

    def close_after_response(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True

    def send_soon(self, events: list[OutboundEvent]) -> None:
        # As a stream does: framed now, the write left to the connection (not modelled).
        self.send_events(events).close()  # type: ignore[attr-defined]

    async def send_file(self, fd: int, size: int) -> bool:
        return False

    async def refuse(self, status: int, reason: str | None) -> None:
        self.refusal = (status, reason)


def _state(app: Any, **options: Any) -> ServerState:
    return ServerState(config=make_test_config(None, options), app=app)


def _request(
    method: bytes = b"GET", headers: Any = (), *, expects_continue: bool = False
) -> Request:
    return Request(
        method=method,
        target=b"/x?y=1",
        headers=[(b"host", b"example.com"), *headers],
        http_version="1.1",
        expects_continue=expects_continue,
    )


async def _run(port: FakePort, app: Any, request: Request | None = None, **options: Any) -> Any:
    state = _state(app, **options)
    runner = RequestRunner(port, state, request or _request(), INFO)
    outcome = await runner.run()
    assert state.in_flight == 0
    assert state.requests_served == 1
    return outcome, runner


async def echo(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"got " + body})


def test_the_fake_is_a_port() -> None:
    port: RequestPort = FakePort()  # mypy checks the structural match
    assert port.can_inform


async def test_body_pieces_and_response(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.access")
    port = FakePort([(b"ab", True), NOT_YET, (b"cd", True), NOT_YET, (b"e", False)])
    outcome, runner = await _run(port, echo, _request(b"POST"))
    assert outcome == DONE_NORMALLY
    assert port.waits == 2  # waited only where nothing was buffered
    assert [type(e) for e in port.sent] == [Response, Data, EndData]
    assert port.sent[1] == Data(b"got abcde")
    assert runner.scope["path"] == "/x" and runner.scope["query_string"] == b"y=1"
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert len(lines) == 1 and '"POST /x?y=1 HTTP/1.1" 200 9' in lines[0]


async def test_exception_before_any_write_gets_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("boom")  # the head was held back: still replaceable

    port = FakePort()
    outcome, _ = await _run(port, app)
    assert outcome == DONE_NORMALLY
    assert isinstance(port.sent[0], Response) and port.sent[0].status == 500
    assert not port.aborted
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Exception in ASGI application" in errors[0].getMessage()


async def test_exception_after_body_bytes_aborts() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("boom")

    port = FakePort()
    await _run(port, app)
    assert port.aborted
    assert [type(e) for e in port.sent] == [Response, Data]  # no 500 after a partial answer


async def test_returning_without_a_response_gets_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    port = FakePort()
    await _run(port, app)
    assert isinstance(port.sent[0], Response) and port.sent[0].status == 500
    assert "returned without sending a response" in caplog.text


async def test_unfinished_response_aborts(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    port = FakePort()
    await _run(port, app)
    assert port.aborted
    assert "returned without finishing the response" in caplog.text


async def test_body_over_limit_is_refused_with_413(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve.access")
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())

    port = FakePort([(b"abc", True), (b"def", True)])
    outcome, _ = await _run(port, app, _request(b"POST"), max_request_body_size=4)
    assert seen[1] == {"type": "http.disconnect"}
    assert outcome == REFUSED
    assert port.refusal is not None and port.refusal[0] == 413
    assert '" 413 ' in caplog.text


async def test_announced_body_over_limit_never_reaches_the_app() -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    port = FakePort()
    request = _request(b"POST", [(b"content-length", b"100")])
    outcome, _ = await _run(port, app, request, max_request_body_size=10)
    assert not called
    assert outcome == LEAVE_BODY_UNREAD
    assert port.closing
    assert isinstance(port.sent[0], Response) and port.sent[0].status == 413


async def test_concurrency_limit_answers_503() -> None:
    port = FakePort()
    state = _state(echo, limit_concurrency=1)
    state.in_flight = 1  # another request is running
    runner = RequestRunner(port, state, _request(), INFO)
    await runner.run()
    assert isinstance(port.sent[0], Response) and port.sent[0].status == 503
    assert port.closing


async def test_continue_is_sent_on_the_first_receive_only() -> None:
    port = FakePort([NOT_YET, (b"body", False)])
    await _run(port, echo, _request(b"POST", expects_continue=True))
    assert port.sent[0] == InformationalResponse(100, [])
    assert [type(e) for e in port.sent[1:]] == [Response, Data, EndData]


async def test_no_continue_once_the_response_started() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        await send({"type": "http.response.body", "body": b"ok"})

    port = FakePort([(b"body", False)])
    await _run(port, app, _request(b"POST", expects_continue=True))
    assert not any(type(e) is InformationalResponse for e in port.sent)


async def test_receive_after_the_body_waits_for_the_peer_to_leave() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        got.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})

    port = FakePort()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, port, app)
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # still waiting
        port.left.set()
    assert got == [{"type": "http.disconnect"}]
    assert not port.sent


async def test_framing_error_is_an_asgi_protocol_error(caplog: pytest.LogCaptureFixture) -> None:
    port = FakePort(frame_error=True)
    await _run(port, echo)
    assert "ASGI protocol error" in caplog.text
    assert port.closing  # the connection's state is not trusted any more
    assert port.refusal == (500, None)  # a 500 outside the protocol (already logged)
    assert port.aborted


async def test_disconnect_errors_are_not_app_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "trioserve.error")

    class FrameworkDisconnect(Exception):
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})
        except OSError as exc:
            raise FrameworkDisconnect from exc

    port = FakePort()
    port.gone = True
    await _run(port, app)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "client went away" in caplog.text


async def test_send_after_the_app_returned_raises() -> None:
    sends: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        sends.append(send)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    port = FakePort()
    await _run(port, app)
    with pytest.raises(ClientDisconnected):
        await sends[0]({"type": "http.response.body"})


async def test_a_known_disconnect_reaches_a_cancelled_receive() -> None:
    """Starlette's is_disconnected(): receive() inside an already-cancelled scope."""
    answers: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the body
        for _ in range(2):
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                answers.append(await receive())
            port.gone = True  # the peer leaves between the two polls

    port = FakePort()
    await _run(port, app)
    # First poll: the peer is there, so receive() would wait, and the scope stops it.
    # Second: the answer is known without waiting, and comes back in spite of the scope.
    assert answers == [{"type": "http.disconnect"}]


async def test_a_drain_ends_a_started_responses_wait() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        got.append(await receive())
        await send({"type": "http.response.body", "body": b"b"})

    port = FakePort()
    state = _state(app)
    runner = RequestRunner(port, state, _request(), INFO)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        await trio.testing.wait_all_tasks_blocked()
        assert not got
        state.begin_shutdown()
    assert got == [{"type": "http.disconnect"}]
    assert port.sent[-2:] == [Data(b"b"), EndData()]  # the app finished its stream
    assert not port.aborted


async def test_an_idle_keep_alive_connection_holds_no_request_state() -> None:
    """Thousands of idle connections add up: once a response is done, nothing of the
    request (scope, runner, body state) stays reachable while the next one is awaited."""
    import gc
    import weakref

    from trioserve.testing import open_server

    class Marker:
        pass

    refs: list[weakref.ref[Marker]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        marker = Marker()
        scope["extensions"]["test.marker"] = marker  # reachable only through the scope
        refs.append(weakref.ref(marker))
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async with open_server(app) as server:
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            with trio.fail_after(5):
                while not answer.endswith(b"ok"):
                    answer += await stream.receive_some(1000)
            await trio.sleep(0.05)  # the server is back in its idle read
            gc.collect()
            assert refs and refs[0]() is None


# -- the held response head (issue 21, item 10) ---------------------------------------------
def _start(status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": []}


async def test_start_and_body_back_to_back_are_framed_together() -> None:
    """The hot path: the head waits for the body and leaves with it (one write)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start())
        await send({"type": "http.response.body", "body": b"hi"})

    port = FakePort()
    await _run(port, app)
    assert port.framed == [["Response", "Data", "EndData"]]


async def test_the_head_goes_out_once_the_app_waits() -> None:
    """An app that waits after http.response.start (SSE) gets its head sent at once."""
    framed_while_waiting: list[list[str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start())
        await trio.sleep(0.01)
        framed_while_waiting.extend(port.framed)
        await send({"type": "http.response.body", "body": b"event"})

    port = FakePort()
    await _run(port, app)
    assert framed_while_waiting == [["Response"]]
    assert port.framed == [["Response"], ["Data", "EndData"]]


async def test_an_error_after_the_head_went_out_aborts(caplog: pytest.LogCaptureFixture) -> None:
    """Once the head was sent because the app waited, a 500 cannot replace it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start())
        await trio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    port = FakePort()
    with caplog.at_level(logging.ERROR, logger="trioserve.error"):
        await _run(port, app)
    assert port.framed == [["Response"]]
    assert port.aborted
    assert "Exception in ASGI application" in caplog.text


async def test_an_error_before_any_wait_still_gets_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(_start(201))
        raise RuntimeError("boom")

    port = FakePort()
    await _run(port, app)
    assert port.framed == [["Response", "Data", "EndData"]]
    assert [e.status for e in port.sent if type(e) is Response] == [500]  # type: ignore[attr-defined]
