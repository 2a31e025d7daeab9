"""Run ASGI apps in a real trioserve inside a test's own nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio

from ..config import Config
from ..run import make_config
from ..server.serve import serve

__all__ = ["LiveServer", "open_server"]


@dataclass(frozen=True)
class LiveServer:
    """Where a test server listens."""

    url: str
    host: str
    port: int
    config: Config

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]


@asynccontextmanager
async def open_server(
    app: Any, *, config: Config | None = None, **options: Any
) -> AsyncIterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1 (a free port) for the body of the ``async with``.

    Lifespan runs around it; leaving the block shuts the server down gracefully.
    """
    if config is None:
        options.setdefault("bind", ["127.0.0.1:0"])
        config = make_config(environ={}, **options)
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(serve, app, config, shutdown_trigger=trigger)
        )
        parts = urlsplit(urls[0])
        try:
            yield LiveServer(urls[0], parts.hostname or "", parts.port or 0, config)
        finally:
            trigger.set()
