"""The json scenario's FastAPI route driven without a server: what the framework costs alone.

The app and route are the ones every server runs (``bench_apps:app``, ``GET /json``), called
in a loop with a scope like the one a server builds for wrk's request, a ``receive()`` that
answers with an empty body and a ``send()`` that keeps the messages: no sockets, no parser,
no server. Run on trio, asyncio and uvloop, the figures show how much of the json scenario's
CPU per request is FastAPI's and how much is the server's (the scenario's CPU per request
minus this), and that the framework itself costs about the same on every loop.

    python benchmarks/fastapi_driver.py [--loop trio asyncio uvloop] [-n N] [--rounds R]
    python benchmarks/fastapi_driver.py --calls   # calls per request instead (deterministic)
    python benchmarks/fastapi_driver.py --json    # one JSON object (what run.py records)

``--calls`` counts Python and C calls per request the way ``calls_per_request.py`` does, so
``calls_per_request.py --path /json`` minus this is the server's share, on a busy machine too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_apps

LOOPS = ("trio", "asyncio", "uvloop")
# What wrk sends (Host, nothing else); the scope is built once, as a server would per request.
_HEADERS = [(b"host", b"127.0.0.1:8000")]
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
EXPECTED = b'{"message":"Hello, world!","items":[1,2,3],"ok":true}'


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/json",
        "raw_path": b"/json",
        "query_string": b"",
        "root_path": "",
        "headers": list(_HEADERS),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def _requests(count: int) -> list[dict[str, Any]]:
    """Run ``count`` requests through the app; the last one's messages."""
    app = bench_apps.app
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return dict(_REQUEST)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for _ in range(count):
        sent.clear()
        await app(_scope(), receive, send)
    return sent


def _check(messages: list[dict[str, Any]]) -> None:
    """The route answered as it does under a server, or the figures measure an error."""
    if len(messages) != 2 or messages[0].get("status") != 200:
        raise RuntimeError(f"unexpected response from the json route: {messages!r}")
    if messages[1].get("body") != EXPECTED:
        raise RuntimeError(f"unexpected json body: {messages[1].get('body')!r}")


def _run_on(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    if loop == "trio":
        return trio.run(main)
    if loop == "asyncio":
        return asyncio.run(main())  # type: ignore[arg-type]
    import uvloop

    return uvloop.run(main())  # type: ignore[arg-type]


def measure(loop: str, count: int, rounds: int = 3) -> float:
    """µs per request on ``loop``: the median of ``rounds`` timed loops of ``count``,
    after a warm-up loop."""

    async def main() -> list[float]:
        _check(await _requests(max(count // 10, 50)))
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            await _requests(count)
            times.append((time.perf_counter() - start) / count * 1e6)
        return times

    times: list[float] = _run_on(loop, main)
    return statistics.median(times)


def count_calls(loop: str, count: int) -> float:
    """Python and C calls per request on ``loop`` (deterministic, unlike the timings)."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    async def main() -> None:
        _check(await _requests(50))
        sys.setprofile(profile)
        try:
            await _requests(count)
        finally:
            sys.setprofile(None)

    _run_on(loop, main)
    return calls / count


def available(loops: list[str]) -> list[str]:
    """The loops asked for that can run here (uvloop is optional)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return [loop for loop in loops if loop != "uvloop"]
    return loops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", nargs="+", default=list(LOOPS), choices=LOOPS)
    parser.add_argument("-n", type=int, default=5000, help="requests per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", action="store_true", help="calls per request, not µs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    unit = "calls" if args.calls else "us"
    for loop in available(args.loop):
        if args.calls:
            results[loop] = count_calls(loop, args.n)
        else:
            results[loop] = measure(loop, args.n, args.rounds)
        if not args.json:
            print(f"FastAPI /json without a server, {loop}: {results[loop]:.1f} {unit}/request")
    if args.json:
        print(json.dumps({"unit": unit, "per_request": results}))


if __name__ == "__main__":
    main()
