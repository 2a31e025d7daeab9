"""The small-DATA budget (issue 22, row 4) is configurable: h2_small_data_burst and
h2_small_data_rate change when a connection sending tiny DATA frames is cut."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, GoAwayFrame

from tests.h2raw import RawH2, close_all, post
from trioserve.testing import open_server

from .test_http2 import Probe


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


async def _upload_in_tiny_frames(batches: int, **options: Any) -> GoAwayFrame | bytes:
    """POST 40 two-byte DATA frames per batch, 0.1 s apart: the GOAWAY, or the echo."""
    async with open_server(Probe(), **options) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, post("/echo"), end_stream=False))
        try:
            for _ in range(batches):
                await client.send(*[client.data(1, b"xy") for _ in range(40)])
                await trio.sleep(0.1)
            await client.send(client.data(1, b"", end_stream=True))
        except trio.BrokenResourceError:
            pass  # cut: the GOAWAY is read below
        body = b""
        while (frame := await client.frame_or_eof()) is not None:
            if isinstance(frame, GoAwayFrame):
                return frame
            if isinstance(frame, DataFrame):
                body += frame.data
                if "END_STREAM" in frame.flags:
                    break
        return body


async def test_small_data_burst_is_an_option() -> None:
    assert await _upload_in_tiny_frames(1) == b"xy" * 40  # default burst: 4000
    cut = await _upload_in_tiny_frames(1, h2_small_data_burst=20)
    assert isinstance(cut, GoAwayFrame) and cut.error_code == ErrorCodes.ENHANCE_YOUR_CALM


async def test_small_data_rate_is_an_option() -> None:
    # A burst of 50 holds one batch of 40; the default rate refills it between batches.
    assert await _upload_in_tiny_frames(3, h2_small_data_burst=50) == b"xy" * 120
    cut = await _upload_in_tiny_frames(3, h2_small_data_burst=50, h2_small_data_rate=1.0)
    assert isinstance(cut, GoAwayFrame) and cut.error_code == ErrorCodes.ENHANCE_YOUR_CALM
