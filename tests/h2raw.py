"""A raw HTTP/2 client for tests: hyperframe frames over a real loopback socket.

It sends exactly the frames a test builds (valid or not) and reads the server's frames back
one by one, so a test can assert on each frame the server writes.
"""

from __future__ import annotations

from typing import Any

import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def get(path: str = "/", authority: str = "localhost", **extra: str) -> list[tuple[bytes, bytes]]:
    fields = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
    ]
    return fields + [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]


def post(path: str = "/") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), *get(path)[1:]]


class RawH2:
    """One client connection; ``await RawH2.open(port)`` sends the preface and SETTINGS.

    Every connection opened is closed by :func:`close_all` (an autouse fixture calls it)."""

    opened: list[RawH2] = []

    def __init__(self, stream: trio.abc.Stream) -> None:
        RawH2.opened.append(self)
        self.stream = stream
        self.buffer = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 2**20
        self.server_settings: dict[int, int] = {}
        self.stashed: list[Frame] = []  # frames of other streams, read while collecting one
        self.control: list[Frame] = []  # stream 0 frames read while collecting a response

    @classmethod
    async def open(
        cls,
        port: int,
        settings: dict[int, int] | None = None,
        *,
        stream: trio.abc.Stream | None = None,
        handshake: bool = True,
        received: bytes = b"",
    ) -> RawH2:
        if stream is None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        client.buffer = received
        frame = SettingsFrame(0)
        frame.settings.update(settings or {})
        await client.send(PREFACE, frame)
        if handshake:
            first = await client.frame(everything=True)
            assert isinstance(first, SettingsFrame) and "ACK" not in first.flags
            client.server_settings = dict(first.settings)
            ack = SettingsFrame(0)
            ack.flags.add("ACK")
            await client.send(ack)
        return client

    async def send(self, *items: Frame | bytes) -> None:
        data = b"".join(i if isinstance(i, bytes) else i.serialize() for i in items)
        await self.stream.send_all(data)

    async def frame(self, timeout: float = 5.0, *, everything: bool = False) -> Frame:
        """The next frame from the server (raises on EOF or timeout), skipping SETTINGS
        ACKs and WINDOW_UPDATEs unless ``everything``."""
        while True:
            frame = await self._next_frame(timeout)
            if everything or not (
                isinstance(frame, WindowUpdateFrame)
                or (isinstance(frame, SettingsFrame) and "ACK" in frame.flags)
            ):
                return frame

    async def _next_frame(self, timeout: float) -> Frame:
        with trio.fail_after(timeout):
            while True:
                if len(self.buffer) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                    if len(self.buffer) >= 9 + length:
                        frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                        self.buffer = self.buffer[9 + length :]
                        if isinstance(frame, HeadersFrame):  # HPACK state: in wire order
                            frame.fields = dict(  # type: ignore[attr-defined]
                                self.decoder.decode(frame.data, raw=True)
                            )
                        return frame
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.buffer += data

    async def frame_or_eof(self, timeout: float = 5.0) -> Frame | None:
        try:
            return await self.frame(timeout)
        except (EOFError, trio.BrokenResourceError):
            return None

    def headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool = True
    ) -> HeadersFrame:
        frame = HeadersFrame(stream_id)
        frame.data = self.encoder.encode(fields)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def data(stream_id: int, payload: bytes, end_stream: bool = False) -> DataFrame:
        frame = DataFrame(stream_id)
        frame.data = payload
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> RstStreamFrame:  # 8: CANCEL
        frame = RstStreamFrame(stream_id)
        frame.error_code = code
        return frame

    @staticmethod
    def window_update(stream_id: int, increment: int) -> WindowUpdateFrame:
        frame = WindowUpdateFrame(stream_id)
        frame.window_increment = increment
        return frame

    @staticmethod
    def continuation(stream_id: int, payload: bytes, end: bool = False) -> ContinuationFrame:
        frame = ContinuationFrame(stream_id)
        frame.data = payload
        if end:
            frame.flags.add("END_HEADERS")
        return frame

    @staticmethod
    def decode(frame: Frame) -> dict[bytes, bytes]:
        return frame.fields  # type: ignore[attr-defined,no-any-return]

    async def response(self, stream_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """Collect one stream's response (other streams' frames are kept in ``others``)."""
        result: dict[str, Any] = {"headers": None, "body": b"", "trailers": None, "others": []}
        informational: list[dict[bytes, bytes]] = []
        result["informational"] = informational
        mine = [f for f in self.stashed if f.stream_id == stream_id]
        self.stashed = [f for f in self.stashed if f.stream_id != stream_id]
        while True:
            frame = mine.pop(0) if mine else await self.frame(timeout)
            if frame.stream_id != stream_id:
                if isinstance(frame, GoAwayFrame):
                    result["goaway"] = frame
                if frame.stream_id:
                    self.stashed.append(frame)
                else:
                    self.control.append(frame)
                result["others"].append(frame)
                continue
            if isinstance(frame, HeadersFrame):
                fields = self.decode(frame)
                if result["headers"] is None and fields[b":status"].startswith(b"1"):
                    informational.append(fields)
                elif result["headers"] is None:
                    result["headers"] = fields
                else:
                    result["trailers"] = fields
            elif isinstance(frame, DataFrame):
                result["body"] += frame.data
                if frame.data:
                    updates = [self.window_update(0, len(frame.data))]
                    if "END_STREAM" not in frame.flags:
                        updates.append(self.window_update(stream_id, len(frame.data)))
                    await self.send(*updates)
            elif isinstance(frame, RstStreamFrame):
                result["reset"] = frame.error_code
                return result
            if "END_STREAM" in frame.flags:
                return result

    async def aclose(self) -> None:
        await self.stream.aclose()


async def close_all() -> None:
    while RawH2.opened:
        await RawH2.opened.pop().aclose()
