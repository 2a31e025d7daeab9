"""A repeated SIGTERM keeps draining; only a second Ctrl-C (SIGINT) cancels at once."""

from __future__ import annotations

import logging
import os
import signal
from functools import partial

import pytest
import trio

from trioserve.server.serve import serve

from .test_shutdown import SlowApp, config, port_of, read_until_close


async def test_second_sigterm_keeps_draining() -> None:
    app = SlowApp()
    cfg = config(graceful_timeout=10)
    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, handle_signals=True))
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
            await stream.send_all(b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            await app.started.wait()
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)
            data = await read_until_close(stream)
    await stream.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()
    assert app.cancelled == 0
    assert app.events[-1] == "lifespan.shutdown"


async def test_second_sigint_cancels_without_claiming_a_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second Ctrl-C says it cancels; "graceful shutdown timed out" is for the deadline."""
    app = SlowApp()
    cfg = config(graceful_timeout=30)
    caplog.set_level(logging.INFO, logger="trioserve.error")
    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, handle_signals=True))
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
            await stream.send_all(b"GET /slow?s=20 HTTP/1.1\r\nHost: x\r\n\r\n")
            await app.started.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
            await read_until_close(stream)
    await stream.aclose()
    assert app.cancelled == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "Received SIGINT again, cancelling in-flight work" in messages
    assert not any("timed out" in m for m in messages), messages


async def test_graceful_timeout_still_says_it_timed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = SlowApp()
    cfg = config(graceful_timeout=0.3)
    caplog.set_level(logging.INFO, logger="trioserve.error")
    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, app, cfg, handle_signals=True))
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(url))
            await stream.send_all(b"GET /slow?s=20 HTTP/1.1\r\nHost: x\r\n\r\n")
            await app.started.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await read_until_close(stream)
    await stream.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Graceful shutdown timed out" in m for m in messages), messages
