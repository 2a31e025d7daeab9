"""The metrics listener's HTTP, connection cap and deadline, on a real loopback socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from trioserve.metrics.admin import MAX_REQUEST_HEAD, AdminServer


class Source:
    def metrics_text(self) -> bytes | None:
        return b"# metrics\n"

    def health(self) -> tuple[bool, str]:
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        return False, "draining"


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = AdminServer(sock, Source(), max_connections=3, deadline=1.0)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _ask(server: AdminServer, request: bytes) -> bytes:
    with socket.create_connection(server.sock.getsockname()[:2], timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    ("request_bytes", "status", "body"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200", b"# metrics\n"),
        (b"GET /healthz?x=1 HTTP/1.0\r\n\r\n", b"200", b"alive\n"),
        (b"GET /readyz HTTP/1.0\n\n", b"503", b"draining\n"),
        (b"HEAD /healthz HTTP/1.0\r\n\r\n", b"200", b""),
        (b"GET /nope HTTP/1.0\r\n\r\n", b"404", None),
        (b"POST /metrics HTTP/1.0\r\n\r\n", b"501", None),
        (b"GARBAGE\r\n\r\n", b"400", None),
        (b"GET /metrics HTTP/1.0\r\nX: " + b"a" * MAX_REQUEST_HEAD, b"431", None),
    ],
)
def test_answers(
    admin: AdminServer, request_bytes: bytes, status: bytes, body: bytes | None
) -> None:
    answer = _ask(admin, request_bytes)
    assert answer.split(b" ", 2)[1] == status
    if body is not None:
        assert answer.split(b"\r\n\r\n", 1)[1] == body


def test_a_request_trickled_past_the_deadline_is_cut(admin: AdminServer) -> None:
    with socket.create_connection(admin.sock.getsockname()[:2], timeout=5) as sock:
        start = time.monotonic()
        try:
            for byte in b"GET /metrics HTTP/1.0":  # each byte in time, the whole not
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # cut while sending: what this test wants
        assert _closed_within(sock, 3.0)
        assert time.monotonic() - start < 2.5


def test_over_the_cap_the_oldest_connection_makes_room(admin: AdminServer) -> None:
    address = admin.sock.getsockname()[:2]
    idle = [socket.create_connection(address, timeout=5) for _ in range(3)]
    try:
        time.sleep(0.2)
        answer = _ask(admin, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 200")
        assert _closed_within(idle[0], 0.5)  # the oldest went to make room
    finally:
        for sock in idle:
            sock.close()
