"""Smoke test of benchmarks/calls_per_request.py (the deterministic hot-path measure)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import calls_per_request  # type: ignore[import-not-found]


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_calls_per_request_measures(http: str) -> None:
    calls = await calls_per_request.measure(http, 50)
    # Server and client together; a keep-alive GET is a few hundred calls. The ceiling
    # only catches a measure that broke (or a hot path that went very wrong).
    assert 100 < calls < 2000


async def test_calls_per_request_counts_the_asyncio_loop_thread() -> None:
    """--loop asyncio: the app's thread is counted too, so the bridge shows up."""
    trio_calls = await calls_per_request.measure("httptools", 50)
    asyncio_calls = await calls_per_request.measure("httptools", 50, "asyncio")
    assert trio_calls < asyncio_calls < 2000
