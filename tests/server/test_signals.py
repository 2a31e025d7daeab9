"""A repeated SIGTERM keeps draining; only a second Ctrl-C (SIGINT) cancels at once."""

from __future__ import annotations

import os
import signal
from functools import partial

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
