"""The scenarios, each written once: server options, a client script, the expected record.

A script drives the version-neutral client interface (:class:`~.clients.Conn`) and words
what the client got as a short string; the app (``apps.py``) writes down what it saw. The
expected :class:`~.record.Outcome` is the contract every version keeps unless the table in
``table.py`` says why one cannot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import trio
from wsproto.events import BytesMessage, CloseConnection, Ping
from wsproto.utilities import LocalProtocolError

from .apps import PATHSEND_BODY, Recorder
from .clients import WS, Conn, Reply, Req
from .record import Outcome
from .transports import Running, Version


@dataclass
class Ctx:
    running: Running
    rec: Recorder
    version: Version

    async def connect(self) -> Conn:
        return await self.running.connect()


Script = Callable[[Ctx], Awaitable[str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    script: Script
    expect: Outcome
    options: dict[str, Any] = field(default_factory=dict)


def describe(reply: Reply) -> str:
    if reply.status is None:
        return "cut" if reply.cut else "no answer"
    return f"{reply.status}{' cut' if reply.cut else ''}"


async def exchange(ctx: Ctx, req: Req) -> Reply:
    conn = await ctx.connect()
    return await conn.reply(await conn.start(req))


def get(path: bytes, *headers: tuple[bytes, bytes], **kw: Any) -> Script:
    """A plain exchange, worded as the status (and ``cut`` if it was)."""

    async def script(ctx: Ctx) -> str:
        return describe(await exchange(ctx, Req(path=path, headers=list(headers), **kw)))

    return script


# -- bodies ---------------------------------------------------------------------------------
BODY_OPTIONS = {"request_body_timeout": 0.5, "request_body_min_rate": 100.0}


async def stalled_body(ctx: Ctx) -> str:
    conn = await ctx.connect()
    handle = await conn.start(Req(b"POST", b"/echo", body=b"abc", content_length=10, end=False))
    return describe(await conn.reply(handle))


async def stalled_body_after_start(ctx: Ctx) -> str:
    conn = await ctx.connect()
    req = Req(b"POST", b"/start-read", body=b"abc", content_length=10, end=False)
    handle = await conn.start(req)
    return describe(await conn.reply(handle))


async def slow_body(ctx: Ctx) -> str:
    """Each gap is under the timeout, the total is over it: bytes earn the time back."""
    conn = await ctx.connect()
    piece = b"a" * 100
    handle = await conn.start(Req(b"POST", b"/echo", body=piece, content_length=400, end=False))
    for i in range(3):
        await trio.sleep(0.3)
        await conn.send_body(handle, piece, end=i == 2)
    reply = await conn.reply(handle)
    return f"{describe(reply)} {reply.body.decode()}"


async def streamed_body_over_limit(ctx: Ctx) -> str:
    """No declared length: the limit can only be found while reading."""
    conn = await ctx.connect()
    piece = b"a" * 600
    handle = await conn.start(Req(b"POST", b"/echo", body=piece, end=False, streamed=True))
    await trio.sleep(0.1)
    await conn.send_body(handle, piece, end=True)
    return describe(await conn.reply(handle))


async def leave_mid_request(ctx: Ctx) -> str:
    conn = await ctx.connect()
    handle = await conn.start(Req(b"POST", b"/echo", body=b"abc", content_length=10, end=False))
    with trio.fail_after(5):
        while not ctx.rec.seen:
            await trio.sleep(0.02)
    await conn.reset(handle)
    return "left"


async def leave_mid_response(ctx: Ctx) -> str:
    conn = await ctx.connect()
    handle = await conn.start(Req(path=b"/stream"))
    head = await conn.head(handle)
    await conn.reset(handle)
    return f"{head.status} then left"


async def late_send(ctx: Ctx) -> str:
    """The client sends a whole request and leaves; the app then tries to answer."""
    conn = await ctx.connect()
    handle = await conn.start(Req(b"POST", b"/late-send", body=b"abc"))
    await trio.sleep(0.3)
    await conn.reset(handle)
    return "left"


# -- response extensions --------------------------------------------------------------------
async def trailers(ctx: Ctx) -> str:
    reply = await exchange(ctx, Req(path=b"/trailers", headers=[(b"te", b"trailers")]))
    checksum = reply.trailers.get(b"x-checksum")
    return f"{describe(reply)} {reply.body.decode()} x-checksum={checksum!r}"


async def early_hints(ctx: Ctx) -> str:
    reply = await exchange(ctx, Req(path=b"/hints"))
    return f"{reply.informational} {describe(reply)} {reply.body.decode()}"


async def pathsend(ctx: Ctx) -> str:
    reply = await exchange(ctx, Req(path=b"/pathsend"))
    return f"{describe(reply)} file body: {reply.body == PATHSEND_BODY}"


# -- the request's frame ---------------------------------------------------------------------
async def request_id(ctx: Ctx) -> str:
    reply = await exchange(ctx, Req(path=b"/scope", headers=[(b"x-request-id", b"contract-1")]))
    return f"{describe(reply)} x-request-id={reply.headers.get(b'x-request-id')!r}"


async def limit_concurrency(ctx: Ctx) -> str:
    first = await ctx.connect()
    held = await first.start(Req(path=b"/hold"))
    with trio.fail_after(5):
        await ctx.rec.held.wait()
    second = describe(await exchange(ctx, Req(path=b"/echo")))
    ctx.rec.release.set()
    return f"{second}, then the held one: {describe(await first.reply(held))}"


async def idle_timeout(ctx: Ctx) -> str:
    conn = await ctx.connect()
    reply = await conn.reply(await conn.start(Req(path=b"/echo")))
    closed = await conn.closed_by_server(3.0)
    return f"{describe(reply)} then {'closed' if closed else 'still open after 3 s'}"


# -- WebSockets -----------------------------------------------------------------------------
WS_DISCONNECT = "websocket.disconnect {code}"


async def _ws_until_close(ws: WS, seconds: float, answer_pings: bool) -> tuple[int, int | None]:
    """(pings seen, the server's close code) within ``seconds``."""
    pings, code = 0, None
    with trio.move_on_after(seconds):
        while code is None:
            events = await ws.events(seconds)
            if not events:
                break
            for event in events:
                if isinstance(event, Ping):
                    pings += 1
                    if answer_pings:
                        await ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    code = event.code
                    with suppress(LocalProtocolError):  # we had closed first
                        await ws.send(event.response())
    return pings, code


def websocket(then: str, path: bytes = b"/ws") -> Script:
    async def script(ctx: Ctx) -> str:
        conn = await ctx.connect()
        status, ws = await conn.ws_open(path)
        if ws is None:
            return f"{status}"
        if then == "pings":
            pings, code = await _ws_until_close(ws, 1.5, answer_pings=True)
            await ws.send(CloseConnection(1000))
            await _ws_until_close(ws, 3.0, answer_pings=False)  # returns at the close
            return f"{status} pinged: {pings >= 2}, closed: {code}"
        if then == "big":
            await ws.send(BytesMessage(b"x" * 4096))
        elif then == "shutdown":
            await trio.sleep(0.1)
            ctx.running.shutdown()
        _, code = await _ws_until_close(ws, 3.0, answer_pings=False)
        return f"{status} close {code}"

    return script


WS_OPTIONS = {"websocket_ping_interval": None}


def _o(
    client: str,
    app: tuple[str, ...] = (),
    access: tuple[str, ...] = (),
    metrics: tuple[str, ...] = (),
    errors: int = 0,
    tracebacks: int = 0,
) -> Outcome:
    return Outcome(client, app, access, errors, tracebacks, metrics)


SCENARIOS = (
    Scenario(
        "stalled_body",
        stalled_body,
        _o(
            "408",
            ("http.request", "http.disconnect"),
            ("408",),
            ("POST 4xx x1", "refused 408 x1"),
        ),
        BODY_OPTIONS,
    ),
    Scenario(
        "stalled_body_after_start",
        stalled_body_after_start,
        _o("200 cut", ("http.request", "http.disconnect"), ("200",), ("POST 2xx x1",)),
        BODY_OPTIONS,
    ),
    Scenario(
        "slow_body",
        slow_body,
        _o("200 400", ("http.request",) * 4, ("200",), ("POST 2xx x1",)),
        BODY_OPTIONS,
    ),
    Scenario(
        "body_over_limit",
        get(b"/echo", method=b"POST", body=b"a" * 2000),
        _o("413", (), ("413",), ("POST 4xx x1", "refused 413 x1")),
        {"max_request_body_size": 1000},
    ),
    Scenario(
        "streamed_body_over_limit",
        streamed_body_over_limit,
        _o(
            "413", ("http.request", "http.disconnect"), ("413",), ("POST 4xx x1", "refused 413 x1")
        ),
        {"max_request_body_size": 1000},
    ),
    Scenario(
        "leave_mid_request",
        leave_mid_request,
        _o("left", ("http.request", "http.disconnect"), ("499",), ("POST none x1",)),
    ),
    Scenario(
        "leave_mid_response",
        leave_mid_response,
        _o("200 then left", ("send raised ClientDisconnected",), ("499",), ("GET none x1",)),
    ),
    Scenario(
        "raise_before_start",
        get(b"/raise-before"),
        _o("500", (), ("500",), ("GET 5xx x1", "app_exceptions x1"), 1, 1),
    ),
    Scenario(
        "raise_after_start",
        get(b"/raise-held"),
        _o("500", (), ("500",), ("GET 5xx x1", "app_exceptions x1"), 1, 1),
    ),
    Scenario(
        "raise_after_body",
        get(b"/raise-after"),
        _o("200 cut", (), ("200",), ("GET 2xx x1", "app_exceptions x1"), 1, 1),
    ),
    Scenario(
        "raise_base_exception",
        get(b"/raise-base"),
        _o("500", (), ("500",), ("GET 5xx x1", "app_exceptions x1"), 1, 1),
    ),
    Scenario(
        "send_after_disconnect",
        late_send,
        _o(
            "left",
            ("http.disconnect", "send raised ClientDisconnected"),
            ("499",),
            ("POST none x1",),
        ),
    ),
    Scenario(
        "trailers",
        trailers,
        _o("200 with trailers x-checksum=b'abc'", (), ("200",), ("GET 2xx x1",)),
    ),
    Scenario(
        "early_hints",
        early_hints,
        _o(
            "[103] 200 hinted",
            ("http.response.early_hint,http.response.pathsend,http.response.trailers",),
            ("200",),
            ("GET 2xx x1",),
        ),
    ),
    Scenario("pathsend", pathsend, _o("200 file body: True", (), ("200",), ("GET 2xx x1",))),
    Scenario(
        "request_id",
        request_id,
        _o(
            "200 x-request-id=b'contract-1'",
            (
                "path=/scope",
                "root_path=",
                "client=127.0.0.1",
                "scheme={scheme}",
                "request_id=contract-1",
                "http_version={http}",
            ),
            ("200",),
            ("GET 2xx x1",),
        ),
        {"request_id_header": "x-request-id", "request_id_response": True},
    ),
    Scenario(
        "limit_concurrency",
        limit_concurrency,
        _o(
            "503, then the held one: 200",
            ("held", "http.request"),
            ("503", "200"),
            ("GET 2xx x1", "GET 5xx x1", "refused 503 x1"),
        ),
        {"limit_concurrency": 1},
    ),
    Scenario(
        "server_names",
        get(b"/echo", authority=b"evil.example"),
        _o("404", (), ("404",), ("GET 4xx x1", "refused 404 x1")),
        {"server_names": ["localhost"]},
    ),
    Scenario(
        "http_version_label",
        get(b"/scope"),
        Outcome(
            "200",
            (
                "path=/scope",
                "root_path=",
                "client=127.0.0.1",
                "scheme={scheme}",
                "request_id=generated",
                "http_version={http}",
            ),
            ("200",),
            metrics=("GET 2xx x1",),
            versions=("{http}",),
        ),
    ),
    Scenario(
        "root_path",
        get(b"/scope"),
        _o(
            "200",
            (
                "path=/api/scope",
                "root_path=/api",
                "client=127.0.0.1",
                "scheme={scheme}",
                "request_id=generated",
                "http_version={http}",
            ),
            ("200",),
            ("GET 2xx x1",),
        ),
        {"root_path": "/api"},
    ),
    Scenario(
        "proxy_headers",
        get(b"/scope", (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")),
        _o(
            "200",
            (
                "path=/scope",
                "root_path=",
                "client=203.0.113.7",
                "scheme=https",
                "request_id=generated",
                "http_version={http}",
            ),
            ("200",),
            ("GET 2xx x1",),
        ),
        {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"},
    ),
    # Malformed requests: a 400 from the server, never the app, no traceback.
    *(
        Scenario(name, script, _o("400", (), (), ("refused 400 x1",)))
        for name, script in (
            ("target_without_slash", get(b"foo")),
            ("target_with_space", get(b"/a b")),
            ("target_asterisk_get", get(b"*")),
            ("method_not_a_token", get(b"/echo", method=b"G\xc3\xa9T")),
        )
    ),
    Scenario(
        "idle_timeout",
        idle_timeout,
        _o("200 then closed", ("http.request",), ("200",), ("GET 2xx x1",)),
        {"keep_alive_timeout": 0.5},
    ),
    Scenario(
        "ws_keepalive_pings",
        websocket("pings"),
        _o(
            "101 pinged: True, closed: None",
            ("websocket.connect", "websocket.disconnect 1000"),
            ("101",),
            ("websockets x1",),
        ),
        {"websocket_ping_interval": 0.3, "websocket_ping_timeout": 5.0},
    ),
    Scenario(
        "ws_ping_timeout",
        websocket("silent"),
        _o(
            "101 close 1011",
            ("websocket.connect", "websocket.disconnect 1006"),
            ("101",),
            ("websockets x1",),
        ),
        {"websocket_ping_interval": 0.3, "websocket_ping_timeout": 0.3},
    ),
    Scenario(
        "ws_max_size",
        websocket("big"),
        _o(
            "101 close 1009",
            ("websocket.connect", "websocket.disconnect 1009"),
            ("101",),
            ("websockets x1",),
        ),
        {**WS_OPTIONS, "websocket_max_message_size": 1024},
    ),
    Scenario(
        "ws_shutdown",
        websocket("shutdown"),
        _o(
            "101 close 1001",
            ("websocket.connect", "websocket.disconnect 1001"),
            ("101",),
            ("websockets x1",),
        ),
        WS_OPTIONS,
    ),
    Scenario(
        "ws_denied",
        websocket("none", b"/ws-deny"),
        _o("403", ("websocket.connect",), ("403",), ("websockets x1",)),
        WS_OPTIONS,
    ),
    Scenario(
        "ws_app_raises",
        websocket("none", b"/ws-raise"),
        _o(
            "101 close 1011",
            ("websocket.connect",),
            ("101",),
            ("app_exceptions x1", "websockets x1"),
            errors=1,
            tracebacks=1,
        ),
        WS_OPTIONS,
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS)
