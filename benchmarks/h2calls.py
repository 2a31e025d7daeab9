"""The server's own Python and C calls per HTTP/2 request (h2c), the client's left out.

``calls_per_request.py --http h2`` counts server and client together; that is right for a
budget, but a change to what the server puts on the wire (HPACK representations, frame
sizes) also changes what its Python h2 client costs. Here each call is charged to the trio
task it runs in, so the server's share is measured alone:

* ``hello``: GETs one after another on one connection (as calls_per_request.py);
* ``m10``: 10 streams in flight at a time, as ``h2load -m 10``;
* ``big``: 1 MiB responses, the client's windows opened wide, as h2load's.

    PYTHONPATH=/path/to/checkout python benchmarks/h2calls.py [-n N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import h2.config
import h2.connection
import h2.events
import trio
from h2.settings import SettingCodes
from trio.lowlevel import current_task

import trioserve
from trioserve.testing import open_server

BIG = b"x" * (1 << 20)
GET = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = BIG if scope["path"] == "/big" else b"hi"
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def client(port: int, rounds: int, streams: int = 1, path: str = "/") -> None:
    """``rounds`` times, ``streams`` GETs sent at once and all their responses read."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    headers = [*GET[:1], (":path", path), *GET[2:]]
    async with stream:
        for _ in range(rounds):
            for _ in range(streams):
                conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
            await stream.send_all(conn.data_to_send())
            ended = 0
            while ended < streams:
                for event in conn.receive_data(await stream.receive_some(1 << 20)):
                    ended += isinstance(event, h2.events.StreamEnded)
                if pending := conn.data_to_send():
                    await stream.send_all(pending)


async def measure(run: Callable[[int], Awaitable[None]], requests: int) -> float:
    """Server calls per request while ``run`` (a client, in this task) makes them."""
    calls = 0
    me = None

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            try:
                task = current_task()
            except RuntimeError:
                task = None
            calls += task is not me

    async with open_server(app, access_log=False, keep_alive_max_requests=10**9) as server:
        await run(server.port)  # warm up
        me = current_task()
        sys.setprofile(count)
        try:
            await run(server.port)
        finally:
            sys.setprofile(None)
    return calls / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="GETs per hello/m10 run")
    args = parser.parse_args()
    n = args.n
    loads: dict[str, tuple[Callable[[int], Awaitable[None]], int]] = {
        "hello": (lambda port: client(port, n), n),
        "m10": (lambda port: client(port, n // 10, 10), n // 10 * 10),
        "big": (lambda port: client(port, max(1, n // 20), 1, "/big"), max(1, n // 20)),
    }
    where = trioserve.__file__.rsplit("/trioserve/", 1)[0]
    for name, (run, requests) in loads.items():
        calls = trio.run(measure, run, requests)
        print(f"{where} {name}: {calls:.1f} server calls per request")


if __name__ == "__main__":
    main()
