"""One contract on every HTTP version: each scenario of ``scenarios.py`` runs on HTTP/1.1
(h11 and httptools), HTTP/2 (TLS with ALPN, and h2c), HTTP/3, and the in-memory transport
(HTTP/1.1 and HTTP/2), and must give the same record: what the client got, what the app
saw, the access log, the error log and the counters. ``table.py`` holds the exceptions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from .apps import Recorder
from .record import access_statuses, observe
from .scenarios import SCENARIOS, Ctx, Scenario
from .table import KNOWN_BUGS, expected
from .transports import H3_USABLE, VERSIONS, Certs, Version, serving


def _marks(scenario: Scenario, version: Version) -> list[pytest.MarkDecorator]:
    marks = []
    if version.proto == "h3" and not H3_USABLE:
        marks.append(pytest.mark.skip(reason="HTTP/3 needs aioquic (Python 3.11+)"))
    bug = KNOWN_BUGS.get((scenario.name, version.name))
    if bug is not None:
        marks.append(pytest.mark.xfail(strict=True, reason=bug))
    return marks


CASES = [
    pytest.param(s, v, id=f"{s.name}-{v.name}", marks=_marks(s, v))
    for s in SCENARIOS
    for v in VERSIONS
]


async def _settle(caplog: pytest.LogCaptureFixture, lines: int) -> None:
    """Wait (a bounded while) until the server has written the access lines it owes."""
    with trio.move_on_after(1.5):
        while len(access_statuses(caplog.records)) < lines:
            await trio.sleep(0.02)
    await trio.sleep(0.05)  # anything logged right after the last line


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("scenario", "version"), CASES)
async def test_contract(
    scenario: Scenario,
    version: Version,
    certs: Certs,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve")
    want = expected(scenario.name, version)
    rec = Recorder(tmp_path)
    async with serving(version, rec.app(), scenario.options, certs, tmp_path) as running:
        with trio.fail_after(15):
            client = await scenario.script(Ctx(running, rec, version))
        await _settle(caplog, len(want.access))
    assert running.samples is not None
    got = observe(client, rec.seen, caplog.records, running.samples)
    assert got.compared_with(want) == want
