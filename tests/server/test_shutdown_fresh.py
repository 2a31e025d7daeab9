"""A connection accepted as draining begins still gets its first request answered."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import trio

from examples.hello import app
from trioserve.server.serve import serve

from ..rawhttp import read_response, read_until_close
from .test_shutdown import config, port_of

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@contextmanager
def shutdown_begun() -> Iterator[trio.Event]:
    """An event set by the "Shutting down" log line, logged right before draining starts."""
    event = trio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Shutting down"):
                event.set()

    handler = Handler()
    logger = logging.getLogger("trioserve.error")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_request_racing_shutdown_on_a_fresh_connection_is_served() -> None:
    trigger = trio.Event()
    cfg = config(keep_alive_timeout=30, graceful_timeout=10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
            port = port_of(url)
            fresh = await trio.open_tcp_stream("127.0.0.1", port)
            # A second connection's full answer means the server has accepted the first
            # one (accepts happen in order) and is waiting for its first request.
            other = await trio.open_tcp_stream("127.0.0.1", port)
            await other.send_all(GET)
            assert (await read_response(other)).startswith(b"HTTP/1.1 200 ")
            with shutdown_begun() as begun:
                trigger.set()
                await begun.wait()
            await fresh.send_all(GET)
            answer = await read_until_close(fresh)
            await other.aclose()
    await fresh.aclose()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer.lower()


async def test_silent_fresh_connection_does_not_hold_shutdown() -> None:
    trigger = trio.Event()
    cfg = config(keep_alive_timeout=30, graceful_timeout=10)
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(partial(serve, app, cfg, shutdown_trigger=trigger))
        port = port_of(url)
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        other = await trio.open_tcp_stream("127.0.0.1", port)
        await other.send_all(GET)
        await read_response(other)
        start = trio.current_time()
        trigger.set()
    elapsed = trio.current_time() - start
    # Closed after the short first-request grace, not after keep-alive or graceful timeouts.
    assert elapsed < 2.0
    assert await read_until_close(silent) == b""
    await silent.aclose()
    await other.aclose()
