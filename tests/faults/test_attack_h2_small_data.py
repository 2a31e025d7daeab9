"""Attack: fill HTTP/2's 1 MiB connection window with 2-byte DATA frames (issue 22, row 4).

Flow control counts payload bytes only, so the window admits half a million such frames,
each as costly to parse as a full one: before the small-DATA budget this cost the server
5.4 s of CPU and +30 MB per connection. Now the connection gets GOAWAY ENHANCE_YOUR_CALM
after a few thousand frames, costing well under half a CPU second, while an upload in
16 KiB frames on another connection is untouched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import hpack
import httpx
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, SettingsFrame

from ..conftest import ROOT
from ..supervisor.procs import Server
from .procstat import cpu_seconds, rss_bytes

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    args = ["tests.faults.apps:hello", "--bind", "127.0.0.1:0", "--no-access-log"]
    proc = Server(ROOT, args)
    try:
        match = proc.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
        proc.port = int(match.group(1))
        yield proc
    finally:
        proc.stop()


def _opening(streams: int) -> bytes:
    """Preface, SETTINGS, the ACK of the server's (so its 256 KiB stream windows apply),
    and one POST head per stream."""
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/upload"),
        (b":authority", b"localhost"),
    ]
    encoder = hpack.Encoder()
    heads = [
        HeadersFrame(2 * i + 1, encoder.encode(fields), flags=["END_HEADERS"]).serialize()
        for i in range(streams)
    ]
    acked = SettingsFrame(0, flags=["ACK"]).serialize()
    return PREFACE + SettingsFrame(0).serialize() + acked + b"".join(heads)


def _frames(sock: socket.socket, deadline: float) -> Iterator[Frame]:
    """The server's frames until EOF (or the deadline)."""
    buffer = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            frame, _ = Frame.parse_frame_header(memoryview(buffer[:9]))
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            yield frame


def _flood(sock: socket.socket, streams: int, frames: int) -> None:
    """``frames`` 2-byte DATA frames on each stream (each fills its 256 KiB window)."""
    try:
        for i in range(streams):
            batch = DataFrame(2 * i + 1, b"xy").serialize() * 4096
            for _ in range(frames // 4096):
                sock.sendall(batch)
    except OSError:
        pass  # the server closed on us: what we expect


def _upload(port: int, size: int) -> tuple[float, int]:
    """POST ``size`` bytes with httpx over HTTP/2 (16 KiB frames); (seconds, status)."""
    start = time.monotonic()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.post(f"http://127.0.0.1:{port}/upload", content=b"z" * size)
        assert response.http_version == "HTTP/2"
    return time.monotonic() - start, response.status_code


def test_tiny_data_flood_gets_enhance_your_calm_cheaply(server: Server) -> None:
    pid = server.proc.pid
    rss_before = rss_bytes(pid)
    cpu_before = cpu_seconds(pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_opening(4))
        # The whole 1 MiB connection window in 2-byte frames: 4 streams of 131,072.
        flooder = threading.Thread(target=_flood, args=(sock, 4, 131072), daemon=True)
        flooder.start()
        goaway = None
        for frame in _frames(sock, time.monotonic() + 30):
            if isinstance(frame, GoAwayFrame):
                goaway = frame
        flooder.join(30)
    time.sleep(0.2)
    cpu = cpu_seconds(pid) - cpu_before
    growth = rss_bytes(pid) - rss_before
    assert cpu < 0.5, f"the flood cost {cpu:.2f} s of server CPU"
    assert growth < 10 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
    assert goaway is not None, "the flood was not cut"
    assert goaway.error_code == ENHANCE_YOUR_CALM
    assert "too many small DATA frames" in server.output
    # The server still serves, and a normal upload in 16 KiB frames is not affected.
    _, status = _upload(server.port, 1 << 20)
    assert status == 200


def test_uploads_in_full_frames_are_never_counted(server: Server) -> None:
    # 8 MiB in 16 KiB frames on one connection: 512 frames, none of them small.
    seconds, status = _upload(server.port, 8 << 20)
    assert status == 200, status
    assert seconds < 10


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_upload_is_not_counted(server: Server) -> None:
    body = b"c" * (3 << 20)
    url = f"http://127.0.0.1:{server.port}/upload"
    options = ["-s", "--http2-prior-knowledge", "--data-binary", "@-", "-o", "/dev/null"]
    result = subprocess.run(
        ["curl", *options, "-w", "%{http_code} %{http_version}", url],
        input=body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"200 2", result


@pytest.mark.skipif(not shutil.which("h2load"), reason="needs h2load")
def test_h2load_uploads_are_not_counted(server: Server, tmp_path: Path) -> None:
    # Many small bodies (each one short DATA frame ending its stream) and some large ones;
    # under keep_alive_max_requests (1000), after which h2load would not reconnect.
    for size, requests in ((100, 900), (200_000, 50)):
        data = tmp_path / f"body-{size}"
        data.write_bytes(b"h" * size)
        url = f"http://127.0.0.1:{server.port}/upload"
        result = subprocess.run(
            ["h2load", "-n", str(requests), "-c", "1", "-m", "10", "-d", str(data), url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert f"{requests} succeeded, 0 failed" in result.stdout, result.stdout[-1500:]
        assert f"status codes: {requests} 2xx" in result.stdout
