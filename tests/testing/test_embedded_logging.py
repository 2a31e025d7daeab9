"""Logging when ``serve()`` is embedded (issue 21, item 11): left alone, so records reach the
root logger; ``trioserve.configure_logging(config)`` gives the command's (and Uvicorn's
``Config``'s) own handlers instead."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import trioserve
from trioserve.logs import access_log, error_log
from trioserve.testing import open_server

LOGGERS = [
    error_log,
    access_log,
    logging.getLogger("uvicorn"),
    logging.getLogger("uvicorn.access"),
]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = {logger: (list(logger.handlers), logger.level, logger.propagate) for logger in LOGGERS}
    yield
    for logger, (handlers, level, propagate) in saved.items():
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def get(server: Any) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(server.url + "/logged")).status_code == 200


async def test_embedded_serve_leaves_logging_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        async with open_server(app) as server:
            await get(server)
    access = [r for r in caplog.records if r.name == "trioserve.access"]
    assert access and "/logged" in access[0].getMessage()  # it reached the root logger
    assert not error_log.handlers and not access_log.handlers


async def test_configure_logging_gives_the_commands_setup(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    trioserve.configure_logging(trioserve.Config(loglevel="info"))
    assert not access_log.propagate and access_log.handlers
    with caplog.at_level(logging.INFO):
        async with open_server(app) as server:
            await get(server)
    assert not [r for r in caplog.records if r.name.startswith("trioserve")]  # not at root
    out = capsys.readouterr()
    assert '"GET /logged HTTP/1.1" 200' in out.out  # the access log on stdout
    assert "Running on http://127.0.0.1:" in out.err  # errors (and info) on stderr


def test_configure_logging_is_public() -> None:
    assert "configure_logging" in trioserve.__all__
    assert trioserve.configure_logging is trioserve.logs.configure_logging


def test_the_documented_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/testing.md's configure_logging example, run as written."""
    import re

    from .test_docs import DOC

    text = DOC.read_text().split("### Logging when the server is embedded", 1)[1]
    block = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert block is not None and "configure_logging(config)" in block[1]
    exec(compile(block[1], "testing.md", "exec"), {})
    assert not access_log.propagate
    access_log.info("an access record")
    assert "an access record" in capsys.readouterr().out
