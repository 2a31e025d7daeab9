"""What parsing one HTTP/1.1 request costs the sans-IO protocol alone: no sockets, no trio.

For callgrind (instructions are deterministic where timings on a busy machine are not):
run it with two counts and divide the difference in instructions by the difference in
counts, which cancels the start-up::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/parse_cost.py --http httptools --request wrk -n 2000

``--part parse`` makes a fresh protocol per request and feeds it one request head
(``receive_data`` and the ``next_event`` calls up to the body's end); ``--part fresh`` makes
the protocols only. parse minus fresh is the parse. ``--part cycle`` is a keep-alive
exchange on one protocol (the request, a two-byte response, ``next_cycle``).

Without valgrind, ``--time`` prints the wall time per request (noise on a loaded machine).
"""

from __future__ import annotations

import argparse
import time

from trioserve.sansio.events import Data, EndData, Response
from trioserve.sansio.http11_choice import protocol_class

REQUESTS = {
    # what wrk sends
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    # a browser's navigation, ten fields
    "browser": (
        b"GET /docs/index.html?lang=en HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: session=8f2a9c1d4e5b6a7f; theme=dark\r\n"
        b"Upgrade-Insecure-Requests: 1\r\n"
        b"Sec-Fetch-Dest: document\r\n"
        b"Sec-Fetch-Mode: navigate\r\n"
        b"\r\n"
    ),
}
RESPONSE = Response(200, [(b"content-length", b"2")])


def run(http: str, raw: bytes, part: str, count: int) -> None:
    cls = protocol_class(http)
    if part == "fresh":
        for _ in range(count):
            cls()
        return
    if part == "parse":
        for _ in range(count):
            proto = cls()
            proto.receive_data(raw)
            proto.next_event()
            if type(proto.next_event()) is not EndData:
                raise AssertionError("not one bodiless request")
        return
    proto = cls()
    for _ in range(count):
        proto.receive_data(raw)
        proto.next_event()
        if type(proto.next_event()) is not EndData:
            raise AssertionError("not one bodiless request")
        proto.send(RESPONSE)
        proto.send(Data(b"hi"))
        proto.send(EndData())
        if not proto.next_cycle():
            raise AssertionError("keep-alive ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--http", choices=["httptools", "h11"], default="httptools")
    parser.add_argument("--request", choices=list(REQUESTS), default="wrk")
    parser.add_argument("--part", choices=["parse", "fresh", "cycle"], default="cycle")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--time", action="store_true")
    args = parser.parse_args()
    raw = REQUESTS[args.request]
    run(args.http, raw, args.part, 50)  # warm: imports, shared parsers, known heads
    start = time.perf_counter()
    run(args.http, raw, args.part, args.n)
    if args.time:
        print(f"{(time.perf_counter() - start) / args.n * 1e6:.2f} us per request")


if __name__ == "__main__":
    main()
