"""Attack: permessage-deflate bombs (issue 22, row 3).

16 MiB of zeros deflates to ~16 KB, so a client can send in 200 KB what inflates to
200 MB, and TCP flow control never sees it. Before the fix, an app that only sends (the
server reads ahead for it) held 12 such messages per connection (+251 MB for one
connection, 826 MB for six). Now inflation stops at ``websocket_max_message_size`` (1009),
read-ahead stops at ``max_app_queue_size`` messages counted inflated, and
``websocket_max_buffered_bytes`` bounds all connections together (backpressure).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from ..conftest import ROOT
from ..supervisor.procs import Server
from .procstat import cpu_seconds, peak_rss_bytes, rss_bytes

MIB = 1 << 20


def _start(app: str, *options: str) -> Server:
    args = [f"tests.faults.apps:{app}", "--bind", "127.0.0.1:0", "--no-access-log", *options]
    proc = Server(ROOT, args)
    match = proc.wait_for(r"Running on http://127\.0\.0\.1:(\d+)")[0]
    proc.port = int(match.group(1))
    return proc


@pytest.fixture
def sender() -> Iterator[Server]:
    proc = _start("ws_sender")  # the defaults: 16 MiB messages, 10 queued, 16 MiB budget
    try:
        yield proc
    finally:
        proc.stop()


class BombClient:
    """A WebSocket client over a blocking socket that negotiates permessage-deflate."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        offer = Request(host="localhost", target="/ws", extensions=[PerMessageDeflate()])
        self.sock.sendall(self.ws.send(offer))
        self.events: list[object] = []
        while not any(isinstance(e, AcceptConnection) for e in self.events):
            self._read()
        accepted = next(e for e in self.events if isinstance(e, AcceptConnection))
        assert accepted.extensions, "permessage-deflate was not negotiated"

    def _read(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return False
        self.ws.receive_data(data or None)
        self.events.extend(self.ws.events())
        return bool(data)

    def send_bombs(self, count: int, size: int) -> int:
        """``count`` messages of ``size`` zeros; returns the bytes that went on the wire."""
        wire = b"".join(self.ws.send(BytesMessage(data=bytes(size))) for _ in range(count))
        try:
            self.sock.sendall(wire)
        except OSError:
            pass  # closed on us (1009): what one of the tests expects
        return len(wire)

    def close_code(self, timeout: float) -> int | None:
        """The server's close code, reading (and dropping ticks) until it comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            for event in self.events:
                if isinstance(event, CloseConnection):
                    return int(event.code)
            if not self._read():
                break
        return None

    def close(self) -> None:
        self.sock.close()


def _latency(port: int) -> float:
    start = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    return time.monotonic() - start


def test_bombs_for_an_app_that_only_sends_are_bounded(sender: Server) -> None:
    pid = sender.proc.pid
    warm = BombClient(sender.port)  # imports and first buffers out of the figure
    warm.send_bombs(1, 1024)
    time.sleep(1.5)
    warm.close()
    time.sleep(0.5)
    before = rss_bytes(pid)
    cpu_before = cpu_seconds(pid)
    clients = [BombClient(sender.port) for _ in range(6)]
    sent = sum(client.send_bombs(12, 16 * MIB) for client in clients)
    assert sent < 2 * MIB  # ~1.2 GB inflated
    # The app sends a tick a second: a pump reads ahead for it from its second send, and
    # the watchdog restarts pumps every second. Give them time to read all they may.
    time.sleep(4.0)
    latency = _latency(sender.port)
    growth = rss_bytes(pid) - before
    peak = peak_rss_bytes(pid) - before
    cpu = cpu_seconds(pid) - cpu_before
    for client in clients:
        client.close()
    print(f"RSS growth {growth / MIB:.1f} MiB (peak {peak / MIB:.1f}), CPU {cpu:.2f} s")
    assert growth < 40 * MIB, f"RSS grew {growth / MIB:.0f} MiB holding deflate bombs"
    assert latency < 2.0, f"another client waited {latency:.2f} s"
    assert "Traceback" not in sender.output


def test_a_message_inflating_past_the_limit_is_closed_1009() -> None:
    server = _start("echo", "--ws-max-size", str(MIB))
    try:
        pid = server.proc.pid
        before = rss_bytes(pid)
        clients = [BombClient(server.port) for _ in range(4)]
        for client in clients:
            client.send_bombs(4, 64 * MIB)  # each inflates to 64 MiB if nothing stops it
        codes = [client.close_code(10) for client in clients]
        growth = peak_rss_bytes(pid) - before
        for client in clients:
            client.close()
        assert codes == [1009] * 4
        assert growth < 40 * MIB, f"peak RSS grew {growth / MIB:.0f} MiB"
        # The server still answers, over HTTP and over a WebSocket.
        assert _latency(server.port) < 2.0
        client = BombClient(server.port)
        client.sock.sendall(client.ws.send(TextMessage(data="hello")))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            isinstance(e, TextMessage) for e in client.events
        ):
            client._read()
        client.close()
        assert any(isinstance(e, TextMessage) and e.data == "hello" for e in client.events)
    finally:
        server.stop()
