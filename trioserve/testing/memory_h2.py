"""HTTP/2 for the in-memory transport: httpcore's HTTP/2 client over an in-memory stream.

The server end is the real server's entry point, which finds the prior-knowledge preface
and serves the connection with trioserve's HTTP/2 code; requests of one client share one
connection (multiplexed), as httpx's own HTTP/2 pool would have them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
import trio

__all__ = ["H2Client"]

_READ_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class _MemoryNetworkStream(httpcore.AsyncNetworkStream):
    """httpcore's view of the client end of an in-memory stream pair."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                return bytes(await self._stream.receive_some(max_bytes))
        except trio.TooSlowError:
            raise httpcore.ReadTimeout(f"no response data within {timeout}s") from None
        except _READ_ERRORS:
            return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                await self._stream.send_all(buffer)
        except trio.TooSlowError:
            raise httpcore.WriteTimeout(f"could not write within {timeout}s") from None
        except _READ_ERRORS as exc:
            raise httpcore.WriteError(str(exc)) from None

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)

    def get_extra_info(self, info: str) -> Any:
        return None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.aiter_stream():
                yield part
        except httpcore.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class H2Client:
    """One multiplexed HTTP/2 connection to the app, over an in-memory stream."""

    def __init__(self, stream: trio.abc.Stream, scheme: str, host: str, port: int) -> None:
        origin = httpcore.Origin(scheme.encode(), host.encode(), port)
        self._origin = origin
        self._conn = httpcore.AsyncHTTP2Connection(origin, _MemoryNetworkStream(stream))

    def usable(self) -> bool:
        return self._conn.is_available()

    async def request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method.encode(),
            url=httpcore.URL(
                scheme=self._origin.scheme,
                host=self._origin.host,
                port=self._origin.port,
                target=url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._conn.handle_async_request(core_request)
        except httpcore.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except httpcore.ReadTimeout as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._conn.aclose()
