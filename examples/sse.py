"""Server-sent events the Starlette/FastAPI way: ``trioserve examples.sse:app``.

The loop polls ``await request.is_disconnected()``. Starlette asks by calling ``receive()``
in an already-cancelled scope; trioserve answers ``http.disconnect`` to that at once when
the client has left, and when the server starts draining (graceful shutdown), so the
stream ends cleanly either way instead of running on or being cut at the deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


async def ticks(request: Request) -> StreamingResponse:
    interval = float(request.query_params.get("interval", "1"))

    async def events() -> AsyncIterator[str]:
        count = 0
        while not await request.is_disconnected():
            yield f"data: {count}\n\n"
            count += 1
            await anyio.sleep(interval)
        # The client left, or the server is draining: nothing more to send.

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(routes=[Route("/ticks", ticks)])
