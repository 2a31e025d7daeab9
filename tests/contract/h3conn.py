"""The contract's client interface over HTTP/3: aioquic's H3 client (tests/h3client.py).

Imported only where aioquic is usable (Python 3.11+).
"""

from __future__ import annotations

import trio

from tests.h3client import H3Client, StreamResult

from .clients import WS, Reply, Req, StreamWS


def _reply(result: StreamResult, terminated: bool) -> Reply:
    status = int(dict(result.headers).get(b":status", b"0")) or None
    return Reply(
        status=status,
        headers=dict(result.headers),
        body=bytes(result.body),
        trailers=dict(result.trailers),
        informational=[int(dict(h)[b":status"]) for h in result.informational],
        cut=result.reset is not None or (terminated and not result.ended),
        done=result.ended or result.reset is not None or terminated,
    )


class H3Conn:
    """One QUIC connection; a request is a stream."""

    def __init__(self, client: H3Client) -> None:
        self.client = client
        self.ws_seen: dict[int, int] = {}

    async def start(self, req: Req) -> int:
        fields = [
            (b":method", req.method),
            (b":scheme", b"https"),
            (b":authority", req.authority),
            (b":path", req.path),
            *req.headers,
        ]
        length = req.length()
        if length is not None:
            fields.append((b"content-length", b"%d" % length))
        return self.client.open(fields=fields, body=req.body or None, end=req.end)

    async def send_body(self, handle: int, data: bytes, end: bool = False) -> None:
        self.client.send_body(handle, data, end)

    async def reset(self, handle: int) -> None:
        self.client.cancel(handle)
        await trio.sleep(0.05)  # let the client's task put it on the wire

    async def _wait(self, handle: int, check: object, timeout: float) -> Reply:
        try:
            await self.client.wait(handle, until=check, timeout=timeout)
        except trio.TooSlowError:
            pass
        return _reply(self.client.streams[handle], self.client.terminated is not None)

    async def head(self, handle: int, timeout: float = 5.0) -> Reply:
        return await self._wait(
            handle, lambda r: bool(r.headers) or r.ended or r.reset is not None, timeout
        )

    async def reply(self, handle: int, timeout: float = 5.0) -> Reply:
        return await self._wait(handle, None, timeout)

    async def closed_by_server(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while self.client.terminated is None:
                await trio.sleep(0.05)
        return self.client.terminated is not None

    async def ws_open(self, path: bytes) -> tuple[int | None, WS | None]:
        headers = [(b":protocol", b"websocket"), (b"sec-websocket-version", b"13")]
        sid = await self.start(Req(b"CONNECT", path, headers, end=False))
        reply = await self.head(sid)
        if reply.status != 200:
            return reply.status, None
        self.ws_seen[sid] = 0
        return 101, StreamWS(self, sid)

    async def ws_chunk(self, sid: int) -> bytes | None:
        """The next DATA bytes of a WebSocket stream (None: it ended)."""
        result = self.client.streams[sid]
        seen = self.ws_seen[sid]
        await self.client.wait(
            sid,
            until=lambda r: len(r.body) > seen or r.ended or r.reset is not None,
            timeout=3600,
        )
        if len(result.body) > seen:
            self.ws_seen[sid] = len(result.body)
            return bytes(result.body[seen:])
        return None

    async def aclose(self) -> None:
        if self.client.terminated is None:
            self.client.close()
            await self.client.flush()  # CONNECTION_CLOSE leaves before the task is cancelled
