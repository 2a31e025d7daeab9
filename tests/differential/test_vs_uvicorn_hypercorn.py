"""The same raw requests and app edge cases against trioserve and its peers.

trioserve (with h11 and with httptools), Uvicorn and Hypercorn each serve
``tests/differential/peer_app.py`` as a subprocess on a free loopback port. Every case sends
the same bytes to each and compares what a client sees: the status (or no answer), the
framing headers, the body, the scope the app saw, and whether the connection is still usable
for a second request. trioserve must agree with Uvicorn and Hypercorn except where
``DIFFERENCES`` lists the case with the reason the difference is deliberate.

The peers are pinned in pyproject.toml's ``test`` extra (Uvicorn 0.54.0, Hypercorn 0.18.0), so
this suite answers the same on every fresh install. Whether the newest releases still differ
is an opt-in report, not a failure: ``bash compliance/peer_drift.sh`` installs them in a
separate venv and runs this module with ``TRIOSERVE_PEER_DRIFT=report``, where a case that
drifted is reported as an xfail with what changed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PINNED = {"uvicorn": "0.54.0", "hypercorn": "0.18.0"}  # the test extra's pins
REPORT_DRIFT = os.environ.get("TRIOSERVE_PEER_DRIFT") == "report"


def peer_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in PINNED}


def differs(message: str) -> None:
    """A peer answered otherwise than this suite was written against.

    Against the pinned peers that is a failure; in the drift report (newer peers) it is
    reported as an xfail, so the report lists every drifted case and exits 0.
    """
    if REPORT_DRIFT:
        pytest.xfail(f"peer drift against {peer_versions()}: {message}")
    pytest.fail(message)


def test_peers_are_the_pinned_versions() -> None:
    """The answers below were recorded against these versions (docs/uvicorn.md says so too)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("hypercorn")
    if REPORT_DRIFT:
        pytest.skip(f"drift report against {peer_versions()}")
    assert peer_versions() == PINNED


ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commands(port: int) -> dict[str, list[str]]:
    app = "tests.differential.peer_app:app"
    address = ["--host", "127.0.0.1", "--port", str(port)]
    quiet = ["--log-level", "critical"]
    return {
        "trioserve-h11": [
            sys.executable,
            "-m",
            "trioserve",
            app,
            *address,
            *quiet,
            "--http",
            "h11",
        ],
        "trioserve-httptools": [
            sys.executable,
            "-m",
            "trioserve",
            app,
            *address,
            *quiet,
            "--http",
            "httptools",
        ],
        "uvicorn": [sys.executable, "-m", "uvicorn", app, *address, *quiet],
        "hypercorn": [
            sys.executable,
            "-m",
            "hypercorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "critical",
        ],
    }


SERVERS = ["trioserve-h11", "trioserve-httptools", "uvicorn", "hypercorn"]


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    pytest.importorskip("uvicorn")
    pytest.importorskip("hypercorn")
    procs: list[subprocess.Popen[bytes]] = []
    out: dict[str, int] = {}
    try:
        for name in SERVERS:
            port = free_port()
            proc = subprocess.Popen(
                commands(port)[name],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            procs.append(proc)
            out[name] = port
        for (name, port), proc in zip(out.items(), procs, strict=True):
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, f"{name} exited with {proc.returncode}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.05)
        yield out
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()


# --- a raw HTTP/1.1 client ------------------------------------------------------------------


class Closed(Exception):
    pass


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed
        self.buffer += data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self.more()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.more()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def rest(self) -> bytes:
        try:
            while True:
                self.more()
        except (Closed, OSError):
            pass
        data, self.buffer = self.buffer, b""
        return data


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    framing: str  # "length", "chunked", "close" or "none"
    interim: list[int]


def read_response(reader: Reader, method: str) -> Response:
    interim: list[int] = []
    while True:
        head = reader.until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    if method == "HEAD" or status in (204, 304):
        return Response(status, headers, b"", "none", interim)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(reader.until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")  # no trailers from these apps
                return Response(status, headers, body, "chunked", interim)
            body += reader.exactly(size)
            reader.exactly(2)
    if "content-length" in headers:
        return Response(
            status, headers, reader.exactly(int(headers["content-length"])), "length", interim
        )
    return Response(status, headers, reader.rest(), "close", interim)


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


def exchange(port: int, raw: bytes, method: str, count: int = 1) -> dict[str, Any]:
    """Send ``raw``, read ``count`` responses, then check the connection is still usable."""
    outcome: dict[str, Any] = {"responses": [], "keep_alive": False}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = Reader(sock)
        sock.sendall(raw)
        try:
            for _ in range(count):
                outcome["responses"].append(summary(read_response(reader, method)))
        except (Closed, OSError, ValueError, IndexError):
            outcome["responses"].append("no response")
            return outcome
        try:
            sock.sendall(PING)
            outcome["keep_alive"] = read_response(reader, "GET").status == 200
        except (Closed, OSError, ValueError, IndexError):
            pass
    return outcome


def summary(response: Response) -> dict[str, Any]:
    body: Any = response.body.decode("latin-1")
    if response.headers.get("content-type") == "application/json" and response.body:
        body = json.loads(response.body)
    return {
        "status": response.status,
        "framing": response.framing,
        "interim": response.interim,
        "close": "close" in response.headers.get("connection", "").lower(),
        "body": body,
        "x-padded": response.headers.get("x-padded"),
        "date": "date" in response.headers,
    }


# --- the cases ------------------------------------------------------------------------------

H = b"Host: example.test\r\n"
CASES: dict[str, tuple[bytes, str, int]] = {
    "get": (b"GET /scope?a=1&b=%20 HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "percent-path": (b"GET /a%20b/%2F/c HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "head": (b"HEAD /scope HTTP/1.1\r\n" + H + b"\r\n", "HEAD", 1),
    "header-case-and-repeat": (
        b"GET /scope HTTP/1.1\r\n" + H + b"X-Dup: 1\r\nx-dup: 2\r\nX-Mixed-Case:  v  \r\n\r\n",
        "GET",
        1,
    ),
    "post-length": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello", "POST", 1),
    "post-chunked": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "POST",
        1,
    ),
    "expect-100": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\nok",
        "POST",
        1,
    ),
    "http10": (b"GET /scope HTTP/1.0\r\n\r\n", "GET", 1),
    "http10-keep-alive": (b"GET /scope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET", 1),
    "connection-close": (b"GET /scope HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", "GET", 1),
    "pipelined": (
        b"GET /scope?n=1 HTTP/1.1\r\n" + H + b"\r\nGET /scope?n=2 HTTP/1.1\r\n" + H + b"\r\n",
        "GET",
        2,
    ),
    "no-host": (b"GET /scope HTTP/1.1\r\n\r\n", "GET", 1),
    "bad-header-name": (b"GET /scope HTTP/1.1\r\n" + H + b"Bad Name: x\r\n\r\n", "GET", 1),
    "cl-and-te": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST",
        1,
    ),
    "bad-version": (b"GET /scope HTTP/9.9\r\n" + H + b"\r\n", "GET", 1),
    "streaming-response": (b"GET /stream HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "streaming-response-http10": (b"GET /stream HTTP/1.0\r\n\r\n", "GET", 1),
    "app-raises-before": (b"GET /raise-before HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "app-returns-without-response": (b"GET /return-early HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "app-raises-after-response": (b"GET /raise-after HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "204-with-body": (b"GET /204-body HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "304-with-body": (b"GET /304-body HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "content-length-too-long": (b"GET /cl-short HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "start-without-body": (b"GET /start-only HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "response-header-ows": (b"GET /ows-header HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "expect-100-unread": (
        b"POST /noread-post HTTP/1.1\r\n"
        + H
        + b"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        "POST",
        1,
    ),
    "absolute-form": (b"GET http://example.test/scope?x=1 HTTP/1.1\r\n" + H + b"\r\n", "GET", 1),
    "options-asterisk": (b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", "OPTIONS", 1),
    "head-streaming": (b"HEAD /stream HTTP/1.1\r\n" + H + b"\r\n", "HEAD", 1),
    "huge-head": (
        b"GET /scope HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n",
        "GET",
        1,
    ),
    "bad-chunk-size": (
        b"POST /echo HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "POST",
        1,
    ),
    "proxy-headers": (
        b"GET /scope HTTP/1.1\r\n" + H + b"X-Forwarded-For: 198.51.100.7, 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n"
        b"X-Forwarded-Prefix: /evil\r\nForwarded: for=192.0.2.1;proto=http\r\n\r\n",
        "GET",
        1,
    ),
    "unread-body": (
        b"POST /noread-post HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n\r\nabcd",
        "POST",
        1,
    ),
}


# --- what trioserve must match, and every deliberate difference -------------------------------

BOTH = "uvicorn and hypercorn"


@dataclass(frozen=True)
class Expect:
    """What trioserve's outcome must equal: a peer's, or ``outcome`` (then ``why`` says why)."""

    peer: str = BOTH  # "uvicorn", "hypercorn", BOTH, or "" when ``outcome`` is given
    why: str = ""
    outcome: dict[str, Any] | None = None
    responses_only: bool = False  # compare the responses, not keep-alive afterwards


def refused(status: int) -> dict[str, Any]:
    """A server-generated error that ends the connection (its body text is each server's own)."""
    return {"responses": [{"status": status, "close": True}], "keep_alive": False}


DIFFERENCES: dict[str, Expect] = {
    "absolute-form": Expect(
        "uvicorn",
        "RFC 9112 3.2.2: for an absolute-form target the scope's path is the URL's path, as "
        "Uvicorn gives it; Hypercorn passes the whole URL as path and raw_path.",
    ),
    "huge-head": Expect(
        "hypercorn",
        "A 70 KB header gets 431 (h11_max_incomplete_size, 16 KiB as h11's default and "
        "Uvicorn's h11 mode) so a head cannot grow without bound; Uvicorn's httptools mode "
        "has no head limit and serves it.",
    ),
    "expect-100-unread": Expect(
        "",
        "The app answered without reading a body it was sent 100-continue for, so the "
        "connection cannot be reused: RFC 9110 10.1.1 says to announce that, and trioserve "
        "sends Connection: close; Uvicorn and Hypercorn close without saying so.",
        {
            "responses": [{"status": 200, "close": True, "body": "unread", "interim": []}],
            "keep_alive": False,
        },
    ),
    "proxy-headers": Expect(
        "uvicorn",
        "Uvicorn's default proxy handling: X-Forwarded-For and -Proto believed from "
        "127.0.0.1, nothing else (not -Host, -Prefix or Forwarded); Hypercorn applies no "
        "proxy headers unless the app is wrapped in its ProxyFixMiddleware.",
    ),
    "header-case-and-repeat": Expect(
        "hypercorn",
        "RFC 9110 5.5: whitespace around a field value is not part of it; trioserve strips "
        "it with both parsers, as Hypercorn and Uvicorn's h11 mode do (Uvicorn's httptools "
        "mode hands the app 'v  ').",
    ),
    "no-host": Expect(
        "hypercorn",
        "RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host; "
        "Uvicorn's httptools mode serves it with no host header.",
    ),
    "cl-and-te": Expect(
        "",
        "RFC 9112 6.1: with both Content-Length and Transfer-Encoding the chunked framing is "
        "used and the connection MUST be closed after the response (request smuggling). "
        "Uvicorn refuses the request (also allowed); Hypercorn keeps the connection open.",
        {"responses": [{"status": 200, "close": True}], "keep_alive": False},
    ),
    "bad-version": Expect(
        "",
        "RFC 9110 15.6.6: 505 for a major version we do not serve; Uvicorn answers 400 and "
        "Hypercorn serves 'HTTP/9.9' to the app.",
        refused(505),
    ),
    "streaming-response-http10": Expect(
        "hypercorn",
        "HTTP/1.0 has no chunked coding (RFC 9112 7.1 is HTTP/1.1 only): the body is "
        "delimited by closing, as Hypercorn; Uvicorn sends chunked to an HTTP/1.0 client.",
    ),
    "app-raises-before": Expect(
        "",
        "The request was read in full and the 500 is fully framed, so the connection is "
        "kept (the client's next request does not pay a reconnect); Uvicorn and Hypercorn "
        "close it.",
        {"responses": [{"status": 500, "close": False}], "keep_alive": True},
    ),
    "app-returns-without-response": Expect(
        "",
        "As app-raises-before: a complete 500 on a connection whose request was read.",
        {"responses": [{"status": 500, "close": False}], "keep_alive": True},
    ),
    "app-raises-after-response": Expect(
        "hypercorn",
        "The response was complete: log once and keep the connection, as Hypercorn; Uvicorn "
        "closes it, so Starlette's ServerErrorMiddleware (500, then re-raise) resets the "
        "client's next request.",
    ),
    "204-with-body": Expect(
        BOTH,
        "Send the head and drop the body, as for HEAD.",
        responses_only=True,
    ),
    "304-with-body": Expect(
        BOTH,
        "Send the head and drop the body, as for HEAD.",
        responses_only=True,
    ),
    "content-length-too-long": Expect(
        "",
        "The head is held back until the body proves the Content-Length, so the framing "
        "error is caught before a byte is written and the client gets a 500 with Connection: "
        "close; Uvicorn and Hypercorn have sent the head already and can only cut it.",
        refused(500),
    ),
    "start-without-body": Expect(
        "",
        "As content-length-too-long: nothing was written yet, so a 500 is still possible.",
        refused(500),
    ),
    "response-header-ows": Expect(
        BOTH,
        "Leading/trailing spaces in a response header value are legal OWS: stripped.",
    ),
}


def normalise(outcome: dict[str, Any]) -> dict[str, Any]:
    """Drop what servers may word differently: the text of their own error pages (whether
    they carry Date is checked by test_server_errors_carry_date)."""
    out = {"responses": [], "keep_alive": outcome["keep_alive"]}
    for response in outcome["responses"]:
        if isinstance(response, dict) and response["status"] >= 400:
            response = {**response, "body": None, "date": None}
        out["responses"].append(response)
    return out


def matches(ours: dict[str, Any], expected: dict[str, Any]) -> bool:
    """``expected`` may give only some fields of each response."""
    if "keep_alive" in expected and ours["keep_alive"] != expected["keep_alive"]:
        return False
    if len(ours["responses"]) != len(expected["responses"]):
        return False
    for got, want in zip(ours["responses"], expected["responses"], strict=True):
        if isinstance(want, str) or isinstance(got, str):
            if got != want:
                return False
        elif any(got.get(key) != value for key, value in want.items()):
            return False
    return True


def params() -> list[Any]:
    out = []
    for case in CASES:
        for server in ("trioserve-h11", "trioserve-httptools"):
            out.append(pytest.param(case, server, id=f"{case}-{server}"))
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("case", "server"), params())
def test_same_bytes_same_answer(ports: dict[str, int], case: str, server: str) -> None:
    raw, method, count = CASES[case]
    ours = normalise(exchange(ports[server], raw, method, count))
    expect = DIFFERENCES.get(case, Expect())
    if expect.peer:
        for peer in ("uvicorn", "hypercorn") if expect.peer == BOTH else (expect.peer,):
            theirs = normalise(exchange(ports[peer], raw, method, count))
            if expect.responses_only:
                ours_part, theirs_part = ours["responses"], theirs["responses"]
            else:
                ours_part, theirs_part = ours, theirs
            if ours_part != theirs_part:
                differs(f"{case}: {peer} answered {theirs_part}, trioserve {ours_part}")
    else:
        assert expect.outcome is not None and expect.why
        assert matches(ours, expect.outcome), (expect.why, ours)


def test_every_difference_is_justified_and_still_different(ports: dict[str, int]) -> None:
    """A listed difference must say why, and must still be one (else delete the entry)."""
    drifted = []
    for case, expect in DIFFERENCES.items():
        assert case in CASES, case
        assert len(expect.why) > 20, case
        if expect.peer == BOTH:
            continue  # a bug being fixed elsewhere, not a difference
        raw, method, count = CASES[case]
        peers = {
            peer: normalise(exchange(ports[peer], raw, method, count))
            for peer in ("uvicorn", "hypercorn")
        }
        if expect.peer:
            other = "hypercorn" if expect.peer == "uvicorn" else "uvicorn"
            if peers[other] == peers[expect.peer]:
                drifted.append(f"{case}: the peers agree now")
        else:
            assert expect.outcome is not None
            if all(matches(p, expect.outcome) for p in peers.values()):
                drifted.append(f"{case}: both peers now answer as trioserve does")
    if drifted:
        differs("; ".join(drifted))


@pytest.mark.parametrize("server", ["trioserve-h11", "trioserve-httptools"])
@pytest.mark.parametrize("case", ["no-host", "bad-header-name", "bad-version"])
def test_server_errors_carry_date(ports: dict[str, int], case: str, server: str) -> None:
    """RFC 9110 6.6.1: an origin server with a clock sends Date, on its own 4xx/5xx too."""
    raw, method, count = CASES[case]
    [response] = exchange(ports[server], raw, method, count)["responses"]
    assert response["status"] >= 400
    assert response["date"], response


def test_peers_send_date_on_their_errors(ports: dict[str, int]) -> None:
    """So the test above asks for what the peers do."""
    for case in ("bad-header-name",):
        for peer in ("uvicorn", "hypercorn"):
            [response] = exchange(ports[peer], *CASES[case])["responses"]
            assert response["status"] == 400 and response["date"], (peer, response)
