"""Python and C function calls (and coroutine resumptions) per keep-alive GET, server and client
in one process: a deterministic stand-in for CPU per request, for A/B checks of the hot
path on a machine too busy for timings. The client side is the same for every checkout,
so a difference between two checkouts is the server's.

    PYTHONPATH=/path/to/checkout python benchmarks/calls_per_request.py [--http h11] [-n N]

``--http h2`` sends the GETs one after another as streams of one h2c connection (prior
knowledge; the server's HTTP/1.1 parser is httptools): the client is h2 too, the same for
every checkout. ``--check`` compares with the budget committed in calls_budget.json (CI).

``--route json`` sends ``GET /json`` to the benchmark app's FastAPI route (``bench_apps``)
instead of the bare hello app: minus ``fastapi_driver.py --calls`` (the route without a
server), what the server adds to a FastAPI request.

``--route post`` posts a 64 KiB body to the benchmark app's echo route (``POST /echo``, the
"post" scenario of run.py), which reads it with ``receive()`` and sends it back.

``--loop asyncio`` counts both threads (the server's and the app's asyncio loop): the
Python cost of the bridge. uvloop's own loop is C, so its internals are not counted (the
budget's ``asyncio`` mode assumes uvloop, which the test extra installs: asyncio's own loop
is Python, and counts far more).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import trio

import trioserve
from trioserve.testing import open_server


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hi"})


# What each route is asked and how its response ends: (path, the app, the body's last bytes).
ROUTES: dict[str, tuple[str, Any, bytes]] = {"hello": ("/", app, b"hi")}


# The post route's body (post.lua's): 64 KiB, echoed back.
POST_BODY = b"x" * 65536


def _bench_route(route: str) -> tuple[str, Any, bytes]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_apps

    if route == "post":
        return "/echo", bench_apps.app, POST_BODY
    return "/json", bench_apps.app, b"}"


def _request(route: str, path: str) -> bytes:
    if route == "post":
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        return head % path.encode() + b"Content-Length: 65536\r\n\r\n" + POST_BODY
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()


async def client(port: int, count: int, route: str = "hello") -> None:
    path, _, end = ROUTES[route]
    request = _request(route, path)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for _ in range(count):
            await stream.send_all(request)
            buf = b""
            # (the echo's body is its own end: the head before it ends in CRLF CRLF)
            while not buf.endswith(end) or len(buf) < len(end):
                buf += await stream.receive_some(65536)


async def h2_client(port: int, count: int, route: str = "hello") -> None:
    import h2.config
    import h2.connection
    import h2.events

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    path = ROUTES[route][0]
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    async with stream:
        for _ in range(count):
            conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
            await stream.send_all(conn.data_to_send())
            done = False
            while not done:
                for event in conn.receive_data(await stream.receive_some(65536)):
                    done = done or isinstance(event, h2.events.StreamEnded)
                if pending := conn.data_to_send():
                    await stream.send_all(pending)


async def uncounted(http: str, count: int, route: str = "hello") -> None:
    """The same requests with no profiler, for a counter outside Python: under
    ``valgrind --tool=callgrind`` the difference between two ``-n`` divided by their
    difference is the instructions per request (see docs/benchmarks.md)."""
    if route not in ROUTES:
        ROUTES[route] = _bench_route(route)
    run_client = h2_client if http == "h2" else client
    options = {"http": "httptools" if http == "h2" else http, "access_log": False}
    async with open_server(
        ROUTES[route][1], keep_alive_max_requests=count + 1000, **options
    ) as server:
        await run_client(server.port, 200, route)  # warm up
        await run_client(server.port, count, route)


async def measure(http: str, count: int, loop: str = "trio", route: str = "hello") -> float:
    if route not in ROUTES:
        ROUTES[route] = _bench_route(route)
    run_client = h2_client if http == "h2" else client
    if http == "h2":
        http = "httptools"
    options = {"http": http, "access_log": False, "keep_alive_max_requests": count + 1000}
    calls = 0
    counting = False

    def count_calls(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if counting and (event == "call" or event == "c_call"):
            calls += 1

    if loop != "trio":  # the asyncio loop's thread starts with the server: count it too
        options["loop"] = loop
        threading.setprofile(count_calls)
    try:
        async with open_server(ROUTES[route][1], **options) as server:
            await run_client(server.port, 200, route)  # warm up
            # (sys.setprofile, not cProfile: benchmarks/profile.py shadows the stdlib's
            # profile module that cProfile imports when this runs from benchmarks/.)
            counting = True
            sys.setprofile(count_calls)
            try:
                await run_client(server.port, count, route)
            finally:
                sys.setprofile(None)
                counting = False
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return calls / count


BUDGET = Path(__file__).resolve().parent / "calls_budget.json"


def check(count: int) -> int:
    """Measure every budgeted mode; 1 if one grew more than the allowed margin.

    The budget is raised in the same commit as the change that needs it, with the reason in
    the file, so a slower hot path is a decision that shows in review, never drift.
    """
    budget = json.loads(BUDGET.read_text())
    margin = budget["margin"]
    failed = 0
    for mode, entry in budget["calls"].items():
        # A mode is its HTTP parser ("http", else the mode's own name) and its loop.
        http, loop = entry.get("http", mode), entry.get("loop", "trio")
        calls = trio.run(measure, http, count, loop)
        limit = entry["calls"] * (1 + margin)
        verdict = "ok" if calls <= limit else "OVER BUDGET"
        print(
            f"{mode}: {calls:.1f} calls per request (budget {entry['calls']}, limit {limit:.1f})"
            f" {verdict}"
        )
        failed |= calls > limit
    return int(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", default="httptools", choices=["h11", "httptools", "h2"])
    parser.add_argument("-n", type=int, default=3000, help="requests measured")
    parser.add_argument("--loop", default="trio", choices=["trio", "asyncio"])
    parser.add_argument("--route", default="hello", choices=["hello", "json", "post"])
    parser.add_argument("--check", action="store_true", help="compare with calls_budget.json")
    parser.add_argument(
        "--uncounted", action="store_true", help="only run the requests (for callgrind)"
    )
    args = parser.parse_args()
    if args.check:
        sys.exit(check(args.n))
    if args.uncounted:
        trio.run(uncounted, args.http, args.n, args.route)
        return
    calls = trio.run(measure, args.http, args.n, args.loop, args.route)
    where = trioserve.__file__.rsplit("/trioserve/", 1)[0]
    mode = "" if args.loop == "trio" else f" --loop {args.loop}"
    mode += "" if args.route == "hello" else f" --route {args.route}"
    print(f"{where} {args.http}{mode}: {calls:.1f} calls per request")


if __name__ == "__main__":
    main()
