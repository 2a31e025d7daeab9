"""Python and C function calls (and coroutine resumptions) per keep-alive GET, server and client
in one process: a deterministic stand-in for CPU per request, for A/B checks of the hot
path on a machine too busy for timings. The client side is the same for every checkout,
so a difference between two checkouts is the server's.

    PYTHONPATH=/path/to/checkout python benchmarks/calls_per_request.py [--http h11] [-n N]

``--loop asyncio`` counts both threads (the server's and the app's asyncio loop): the
Python cost of the bridge. uvloop's own loop is C, so its internals are not counted.
"""

from __future__ import annotations

import argparse
import sys
import threading
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


async def client(port: int, count: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for _ in range(count):
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while not buf.endswith(b"hi"):
                buf += await stream.receive_some(65536)


async def measure(http: str, count: int, loop: str = "trio") -> float:
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
        async with open_server(app, **options) as server:
            await client(server.port, 200)  # warm up
            # (sys.setprofile, not cProfile: benchmarks/profile.py shadows the stdlib's
            # profile module that cProfile imports when this runs from benchmarks/.)
            counting = True
            sys.setprofile(count_calls)
            try:
                await client(server.port, count)
            finally:
                sys.setprofile(None)
                counting = False
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return calls / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", default="httptools", choices=["h11", "httptools"])
    parser.add_argument("-n", type=int, default=3000, help="requests measured")
    parser.add_argument("--loop", default="trio", choices=["trio", "asyncio"])
    args = parser.parse_args()
    calls = trio.run(measure, args.http, args.n, args.loop)
    where = trioserve.__file__.rsplit("/trioserve/", 1)[0]
    mode = "" if args.loop == "trio" else f" --loop {args.loop}"
    print(f"{where} {args.http}{mode}: {calls:.1f} calls per request")


if __name__ == "__main__":
    main()
