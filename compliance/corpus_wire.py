"""The corpus runner's side of the wire: send one file, read back what the server does.

Deliberately a plain blocking socket and a hand-written response reader: the runner must see
exactly what the server sent, including broken framing and early closes, which an HTTP client
library would hide or repair.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IDLE = 0.3  # after a response, this long without more bytes ends the wait early
_STATUS_LINE = re.compile(r"HTTP/\d\.\d (\d{3})(?: .*)?$")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


@dataclass
class Exchange:
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the connection reached EOF (or was reset)
    server_closed: bool = False  # ... before we shut down our sending side

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def closed_mark(self, valid: bool) -> str:
        if self.server_closed or (valid and self.closed):
            return " +close"
        return " +eofclose" if self.closed else ""


def _chunked_end(buf: bytes, pos: int) -> int | None:
    """Where a complete chunked body starting at ``pos`` ends (after trailers), else None."""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(buf[pos:line_end].split(b";")[0].strip() or b"0", 16)
        pos = line_end + 2
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2
    while True:  # the trailer section ends with an empty line
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        if line_end == pos:
            return pos + 2
        pos = line_end + 2


def _body_end(buf: bytes, start: int, response: Response, method: str, eof: bool) -> int | None:
    if method == "HEAD" or response.status in (101, 204, 304):
        return start
    if any(k == "transfer-encoding" and "chunked" in v.lower() for k, v in response.headers):
        return _chunked_end(buf, start)
    length = response.header("content-length")
    if length is None:
        return len(buf) if eof else None
    end = start + int(length)
    return end if len(buf) >= end else None


def read_responses(buf: bytes, methods: Sequence[str], eof: bool) -> list[Response]:
    """The complete responses at the start of ``buf``; interim 1xx ones are left out."""
    responses: list[Response] = []
    pos = 0
    while (head_end := buf.find(b"\r\n\r\n", pos)) >= 0:
        lines = buf[pos:head_end].decode("latin-1").split("\r\n")
        match = _STATUS_LINE.match(lines[0])
        if match is None:
            break
        headers = []
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers.append((key.strip().lower(), value.strip()))
        response = Response(int(match.group(1)), headers)
        if 100 <= response.status < 200 and response.status != 101:
            pos = head_end + 4
            continue
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        end = _body_end(buf, head_end + 4, response, method, eof)
        if end is None:
            break
        responses.append(response)
        pos = end
    return responses


def exchange(
    address: tuple[str, int],
    data: bytes,
    methods: Sequence[str],
    want: int | None,
    timeout: float,
    half_close: bool = False,
) -> Exchange:
    """Send ``data`` on a fresh connection and collect what comes back.

    Reading stops at EOF, at the first 4xx/5xx, after ``want`` final responses, after
    ``timeout`` seconds, or ``IDLE`` seconds after the last response. With ``half_close``, a
    wait that saw no response at all shuts down our sending side and waits ``timeout`` again:
    a server that was waiting for more request bytes must then answer or close.
    """
    result = Exchange()
    buf = b""
    half_closed = False
    with socket.create_connection(address, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have refused early; what it sent is still readable
        deadline = time.monotonic() + timeout
        while not _done(result, want):
            wait = deadline - time.monotonic()
            if result.responses and not half_closed:
                wait = min(wait, IDLE)
            chunk = _recv(sock, wait) if wait > 0 else None
            if chunk == b"":
                result.closed = True
                break
            if chunk:
                buf += chunk
                result.responses = read_responses(buf, methods, eof=False)
                continue
            if not (half_close and not half_closed and not result.responses):
                break
            _shutdown_write(sock)
            half_closed = True
            deadline = time.monotonic() + timeout
    result.server_closed = result.closed and not half_closed
    result.responses = read_responses(buf, methods, eof=result.closed)
    return result


def _done(result: Exchange, want: int | None) -> bool:
    if want is not None and len(result.responses) >= want:
        return True
    return any(status >= 400 for status in result.statuses)


def _recv(sock: socket.socket, wait: float) -> bytes | None:
    """Bytes, ``b""`` at EOF or reset, None when ``wait`` passes without any."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except (ConnectionResetError, BrokenPipeError):
        return b""


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def add_host_valid(data: bytes, requests: Sequence[Mapping[str, Any]]) -> tuple[bytes, bool]:
    """Insert ``Host: localhost`` after each expected HTTP/1.1 request line that lacks one.

    The request lines are found from the expectation, so pipelined requests each get theirs;
    when one cannot be found the file is sent unchanged rather than guessed at.
    """
    out = bytearray()
    pos = 0
    added = False
    for request in requests:
        major, minor = request["version"]
        line = f"{request['method']} {request['uri']['raw']} HTTP/{major}.{minor}\r\n"
        try:
            found = data.find(line.encode("latin-1"), pos)
        except UnicodeEncodeError:
            return data, False
        if found < 0:
            return data, False
        line_end = found + len(line)
        out += data[pos:line_end]
        pos = line_end
        has_host = any(k.upper() == "HOST" for k, _ in request["headers"])
        if (major, minor) == (1, 1) and not has_host:
            out += b"Host: localhost\r\n"
            added = True
    return bytes(out + data[pos:]), added


def add_host_invalid(data: bytes) -> tuple[bytes, bool]:
    """Insert ``Host: localhost`` after an HTTP/1.1 request line when no Host line exists."""
    line_end = data.find(b"\r\n")
    if line_end < 0 or not data[:line_end].endswith(b"HTTP/1.1"):
        return data, False
    if re.search(rb"(?im)^host[ \t]*:", data):
        return data, False
    return data[: line_end + 2] + b"Host: localhost\r\n" + data[line_end + 2 :], True
