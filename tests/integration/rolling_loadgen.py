"""The rolling-deploy test's load generator: ``python rolling_loadgen.py URL STOPFILE MAX``.

Runs inside the balancer's network namespace, so its traffic never leaves the test's
namespaces. Bounded: it stops when STOPFILE appears or after MAX seconds, and prints one
JSON object with what it counted. Every client records each failure with its time, so the
test can tell failures in a drain from failures in the SIGKILL window.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failures: list[dict[str, Any]] = []
        self.ws_closes: list[dict[str, Any]] = []

    def success(self, kind: str) -> None:
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + 1

    def failure(self, kind: str, why: str) -> None:
        with self.lock:
            self.failures.append({"kind": kind, "why": why, "at": time.time()})


def stopped(stopfile: str, deadline: float) -> bool:
    return os.path.exists(stopfile) or time.monotonic() > deadline


def http_client(url: str, kind: str, counts: Counts, stop: Any) -> None:
    parts = urlsplit(url)
    conn: http.client.HTTPConnection | None = None
    path = "/stream" if kind == "stream" else "/"
    while not stop():
        if conn is None or kind == "fresh":
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                counts.failure(kind, f"status {response.status}: {body[:80]!r}")
            elif kind == "stream" and not body.startswith(b"0 1 2 3 4 5 6 7 8 9 end "):
                counts.failure(kind, f"stream body {body[:80]!r}")
            else:
                counts.success(kind)
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            counts.failure(kind, repr(exc))
            conn.close()
            conn = None
        if kind == "stream":
            time.sleep(0.05)
    if conn is not None:
        conn.close()


def ws_client(url: str, counts: Counts, stop: Any) -> None:
    ws_url = url.replace("http://", "ws://") + "/ws"
    while not stop():
        try:
            ws = connect(ws_url, open_timeout=5, close_timeout=2)
        except (OSError, TimeoutError, Exception) as exc:
            counts.failure("ws-connect", repr(exc))
            time.sleep(0.1)
            continue
        counts.success("ws-connect")
        try:
            with ws:
                n = 0
                while not stop():
                    n += 1
                    ws.send(f"m{n}")
                    if ws.recv(timeout=5) != f"m{n}":
                        counts.failure("ws", "wrong echo")
                    counts.success("ws-message")
                    time.sleep(0.05)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            with counts.lock:
                counts.ws_closes.append({"code": code, "at": time.time()})
        except (OSError, TimeoutError) as exc:
            counts.failure("ws", repr(exc))


def main() -> None:
    url, stopfile, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
    deadline = time.monotonic() + limit
    counts = Counts()

    def stop() -> bool:
        return stopped(stopfile, deadline)

    threads = [threading.Thread(target=http_client, args=(url, "keep-alive", counts, stop))]
    threads += [threading.Thread(target=http_client, args=(url, "keep-alive", counts, stop))]
    threads += [threading.Thread(target=http_client, args=(url, "fresh", counts, stop))]
    threads += [threading.Thread(target=http_client, args=(url, "fresh", counts, stop))]
    threads += [threading.Thread(target=http_client, args=(url, "stream", counts, stop))]
    threads += [threading.Thread(target=ws_client, args=(url, counts, stop)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit + 30)
    result = {"ok": counts.ok, "failures": counts.failures, "ws_closes": counts.ws_closes}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
