from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.programs import check_markers, in_ci, is_missing_program_reason

ROOT = Path(__file__).resolve().parent.parent
# The examples are imported by their tests as `examples.NAME`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Hypothesis' 200 ms per-example deadline measures the machine, not the code: on a loaded
# 2-core CI machine an example of a correct parser can take longer, and the test then fails
# as "flaky". What these tests check is behaviour, so no deadline (a test may still set one).
settings.register_profile("trioserve", deadline=None)
settings.load_profile("trioserve")

# TRIOSERVE_TEST_HTTP=h11 (or httptools) runs the suite with that HTTP/1.1 parser, whatever
# a test's config says: in-process servers through the factory, `python -m trioserve` children
# through the environment they inherit (TRIOSERVE_TEST_HTTP itself would be an unknown key).
TEST_HTTP = os.environ.pop("TRIOSERVE_TEST_HTTP", None)
if TEST_HTTP:
    os.environ["TRIOSERVE_HTTP"] = TEST_HTTP

    @pytest.fixture(autouse=True)
    def _force_http_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        from trioserve.sansio import http11_choice

        cls = http11_choice.protocol_class(TEST_HTTP)
        monkeypatch.setattr(http11_choice, "protocol_class", lambda kind: cls)
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_program(name, package=...): skip when the system program is missing "
        "(fail in CI); see tests/programs.py",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    check_markers(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a test skipped for a missing program (a plain ``shutil.which`` skip included)
    is a failure: CI installs every program the tests need, so the skip hides a test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and in_ci() and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if is_missing_program_reason(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI for a missing program: {reason}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No "exit 5": a run that collected no test fails and says why (CI counts exit 5 as a
    run that tested nothing, and a typo in a path or -k would otherwise pass unnoticed)."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "no test was collected: that is a failure here (tests/conftest.py)"
            )
