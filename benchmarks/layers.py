"""Trio servers that stop at one layer of the hello request path, to see what each costs.

The trio ceiling (``ceilings.py --kind http``) parses nothing. These add one layer
at a time, with the same one-task-per-connection loop over ``trio.SocketStream``, and answer
the hello scenario's ``GET /`` with the same 13-byte body:

* ``--layer h11``: a bare h11 connection, used the way Uvicorn's h11 protocol uses it
  (``next_event`` until a request, ``send`` Response, Data, EndOfMessage). No ASGI at all:
  what any h11-based server on trio pays before it does anything of its own.
* ``--layer sansio``: trioserve's sans-IO core in place of bare h11: ``HTTP11Protocol``
  (h11 plus the strict checks), ``build_http_scope`` and ``HTTPResponseCycle`` for the two
  ASGI messages a hello app sends. No app call, no server layer (``server/http11.py``).
  ``--http httptools`` uses the optional httptools protocol (``http = "httptools"``).

trioserve's CPU per request minus ``sansio``'s is the cost of its trio layer and the ASGI
call; ``sansio`` minus ``h11`` is the cost of its checks and ASGI message handling.

    python layers.py --layer h11 --port 8000
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import h11
import trio

BODY = b"Hello, world!"
HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", b"%d" % len(BODY)),
    (b"server", b"layers"),
    (b"date", b"Tue, 24 Nov 2026 00:00:00 GMT"),
]


async def serve_h11(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data:
                return
        elif type(event) is h11.Request:
            out = conn.send(h11.Response(status_code=200, headers=HEADERS, reason=b"OK"))
            out += conn.send(h11.Data(data=BODY))
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
        elif type(event) is h11.EndOfMessage:
            if conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
        elif type(event) is not h11.Data:
            return


def sansio_handler(http: str) -> Any:
    from trioserve.sansio.asgi import HTTPResponseCycle, build_http_scope
    from trioserve.sansio.events import NEED_DATA, EndData, Request
    from trioserve.sansio.http11_choice import make_http11_protocol

    def make_protocol() -> Any:
        return make_http11_protocol(http, max_head_size=16 * 1024)

    start = {"type": "http.response.start", "status": 200, "headers": HEADERS[:2]}
    body = {"type": "http.response.body", "body": BODY}
    defaults = HEADERS[2:]
    peer = ("127.0.0.1", 1)
    local = ("127.0.0.1", 8000)

    async def serve_sansio(stream: trio.SocketStream) -> None:
        proto = make_protocol()
        while True:
            event = proto.next_event()
            if event is NEED_DATA:
                data = await stream.receive_some(65536)
                proto.receive_data(data)
                if not data:
                    return
            elif type(event) is Request:
                build_http_scope(
                    event, scheme="http", client=peer, server=local, root_path="", state=None
                )
                cycle = HTTPResponseCycle(is_head=False, default_headers=defaults)
                cycle.on_message(start)
                out = b"".join([proto.send(e) for e in cycle.on_message(body)])
                await stream.send_all(out)
            elif type(event) is EndData:
                if not proto.keep_alive:
                    return
                proto.start_next_cycle()
            else:
                return

    return serve_sansio


async def main(args: argparse.Namespace) -> None:
    serve = serve_h11 if args.layer == "h11" else sansio_handler(args.http)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(args.port, host=args.host, backlog=1024)
    port = listeners[0].socket.getsockname()[1]  # --port 0: a free one, for the smoke test
    print(f"layers ({args.layer}) listening on {args.host}:{port}", file=sys.stderr, flush=True)
    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=["h11", "sansio"], required=True)
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        pass
