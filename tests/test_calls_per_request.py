"""Smoke test of benchmarks/calls_per_request.py (the deterministic hot-path measure)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import calls_per_request  # type: ignore[import-not-found]


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_calls_per_request_measures(http: str) -> None:
    calls = await calls_per_request.measure(http, 50)
    # Server and client together; a keep-alive GET is a few hundred calls. The ceiling
    # only catches a measure that broke (or a hot path that went very wrong).
    assert 100 < calls < 2000


@pytest.mark.parametrize("http", ["h11", "h2"])
async def test_uncounted_runs_the_requests_without_a_profiler(http: str) -> None:
    """--uncounted (for callgrind): the same requests, and no profile function left set."""
    await calls_per_request.uncounted(http, 20)
    assert sys.getprofile() is None


async def test_calls_per_request_counts_the_asyncio_loop_thread() -> None:
    """--loop asyncio: the app's thread is counted too, so the bridge shows up."""
    trio_calls = await calls_per_request.measure("httptools", 50)
    asyncio_calls = await calls_per_request.measure("httptools", 50, "asyncio")
    assert trio_calls < asyncio_calls < 2000


def test_budget_check_fails_over_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CI guard can fail: a budget below what a request costs is reported and exits 1."""
    budget = tmp_path / "budget.json"
    entry = {"calls": 100.0, "reason": "test"}
    budget.write_text(json.dumps({"margin": 0.03, "calls": {"h2": entry, "h11": entry}}))
    monkeypatch.setattr(calls_per_request, "BUDGET", budget)
    assert calls_per_request.check(50) == 1
    generous = {"calls": 5000.0, "reason": "test"}
    budget.write_text(json.dumps({"margin": 0.03, "calls": {"h2": generous}}))
    assert calls_per_request.check(50) == 0


def test_budget_check_measures_asyncio_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asyncio mode's entry is measured with the loop it names: a budget between trio
    mode's count and asyncio mode's fails only if the bridge's thread is counted."""
    budget = tmp_path / "budget.json"
    trio_calls = await_measure("httptools", "trio")
    asyncio_calls = await_measure("httptools", "asyncio")
    between = {"http": "httptools", "loop": "asyncio", "reason": "test"}
    between["calls"] = (trio_calls + asyncio_calls) / 2 / 1.03
    budget.write_text(json.dumps({"margin": 0.03, "calls": {"asyncio": between}}))
    monkeypatch.setattr(calls_per_request, "BUDGET", budget)
    assert calls_per_request.check(50) == 1
    budget.write_text(
        json.dumps({"margin": 0.03, "calls": {"asyncio": {**between, "calls": 5000.0}}})
    )
    assert calls_per_request.check(50) == 0


def await_measure(http: str, loop: str) -> float:
    calls: float = trio.run(calls_per_request.measure, http, 50, loop)
    return calls


def test_committed_budget_names_every_mode_with_a_reason() -> None:
    budget = json.loads(calls_per_request.BUDGET.read_text())
    assert set(budget["calls"]) == {"httptools", "h11", "h2", "asyncio"}
    assert budget["calls"]["asyncio"]["loop"] == "asyncio"
    assert all(len(entry["reason"]) > 10 for entry in budget["calls"].values())


async def test_calls_per_request_json_route_counts_fastapi_too() -> None:
    """--route json: the benchmark's FastAPI route, so the framework's calls are in it."""
    hello = await calls_per_request.measure("httptools", 50)
    json_route = await calls_per_request.measure("httptools", 50, route="json")
    assert hello + 100 < json_route < 3000
