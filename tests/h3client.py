"""A small HTTP/3 client on aioquic's sans-IO API, driven by trio, for raw test scenarios.

It gives a test every lever a real client has (send a head without ``:path``, reset a
stream mid-response, STOP_SENDING, open many streams, stop reading) and records what the
server answered, frame by frame, per stream.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StreamResult:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the server's RESET_STREAM error code
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H3Client:
    """One QUIC connection to the server; ``request()`` and friends open streams on it."""

    def __init__(self, port: int, ca_file: str, *, max_stream_data: int = 1 << 20) -> None:
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=list(H3_ALPN),
            server_name="localhost",
            max_stream_data=max_stream_data,
        )
        config.load_verify_locations(ca_file)
        self.tickets: list[Any] = []  # TLS session tickets the server issued (0-RTT needs one)
        self.quic = QuicConnection(
            configuration=config, session_ticket_handler=self.tickets.append
        )
        self.addr = ("127.0.0.1", port)
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.h3 = H3Connection(self.quic)
        self.streams: dict[int, StreamResult] = {}
        self.events: list[Any] = []
        self.terminated: ConnectionTerminated | None = None
        self.hold_reads = False  # stop reading stream data (no window updates)
        self._wake = trio.Event()
        self.connected = trio.Event()
        self.resumed = trio.Event()  # cleared by pause(): the client stops reading the socket
        self.resumed.set()

    def pause(self) -> None:
        """Stop receiving (and so acknowledging) anything, like a stalled client."""
        self.resumed = trio.Event()
        self.wake()

    def resume(self) -> None:
        self.resumed.set()

    async def run(self) -> None:
        await self.sock.connect(self.addr)
        self.quic.connect(self.addr, now=trio.current_time())
        while self.terminated is None:
            await self.flush()
            timer = self.quic.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                async with trio.open_nursery() as nursery:

                    async def wait_wake() -> None:
                        await self._wake.wait()
                        nursery.cancel_scope.cancel()

                    async def wait_data() -> None:
                        await self.resumed.wait()
                        data = await self.sock.recv(65536)
                        self.quic.receive_datagram(data, self.addr, now=trio.current_time())
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(wait_wake)
                    nursery.start_soon(wait_data)
            self._wake = trio.Event()
            timer = self.quic.get_timer()
            if timer is not None and timer <= trio.current_time():
                self.quic.handle_timer(now=trio.current_time())
            while (event := self.quic.next_event()) is not None:
                self._on_event(event)

    def _on_event(self, event: QuicEvent) -> None:
        self.events.append(event)
        if type(event).__name__ == "HandshakeCompleted":
            self.connected.set()
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            for result in self.streams.values():
                result.changed.set()
            return
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].reset = event.error_code
            self._changed(event.stream_id)
        for h3_event in self.h3.handle_event(event):
            self.events.append(h3_event)
            result = self.streams.get(getattr(h3_event, "stream_id", -1))
            if result is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                status = dict(h3_event.headers).get(b":status", b"")
                if status.startswith(b"1"):
                    result.informational.append(h3_event.headers)
                elif result.headers:
                    result.trailers = h3_event.headers
                else:
                    result.headers = h3_event.headers
            elif isinstance(h3_event, DataReceived):
                result.body += h3_event.data
            if getattr(h3_event, "stream_ended", False):
                result.ended = True
            self._changed(h3_event.stream_id)

    def _changed(self, stream_id: int) -> None:
        result = self.streams[stream_id]
        result.changed.set()
        result.changed = trio.Event()

    async def flush(self) -> None:
        for data, _ in self.quic.datagrams_to_send(now=trio.current_time()):
            await self.sock.send(data)

    def wake(self) -> None:
        self._wake.set()

    # -- streams ---------------------------------------------------------------------------
    def open(
        self,
        path: bytes = b"/",
        *,
        method: bytes = b"GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        fields: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """Send a request head (and body); returns the stream id."""
        stream_id = self.quic.get_next_available_stream_id()
        self.streams[stream_id] = StreamResult()
        if fields is None:
            fields = [
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path),
                *(headers or []),
            ]
        self.h3.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.h3.send_data(stream_id, body, end_stream=end)
        self.wake()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.h3.send_data(stream_id, data, end_stream=end)
        self.wake()

    def cancel(self, stream_id: int, *, reset: bool = True, stop: bool = True) -> None:
        """What a browser does when a request is cancelled: RESET_STREAM and STOP_SENDING."""
        if reset:
            self.quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
        if stop:
            self.quic.stop_stream(stream_id, 0x10C)
        self.wake()

    async def wait(self, stream_id: int, until: Any = None, timeout: float = 10) -> StreamResult:
        """Wait until ``until(result)`` (default: the stream ended or was reset)."""
        result = self.streams[stream_id]
        check = until or (lambda r: r.ended or r.reset is not None)
        with trio.fail_after(timeout):
            while not check(result) and self.terminated is None:
                await result.changed.wait()
        return result

    async def request(self, path: bytes = b"/", **kwargs: Any) -> StreamResult:
        return await self.wait(self.open(path, **kwargs))

    def close(self) -> None:
        self.quic.close()
        self.wake()


@asynccontextmanager
async def h3_client(port: int, ca_file: str, **kwargs: Any) -> AsyncIterator[H3Client]:
    client = H3Client(port, ca_file, **kwargs)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(10):
                await client.connected.wait()
            try:
                yield client
            finally:
                client.close()
                await client.flush()
                nursery.cancel_scope.cancel()
    finally:
        client.sock.close()
