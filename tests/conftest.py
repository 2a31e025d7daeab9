from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.programs import check_markers

ROOT = Path(__file__).resolve().parent.parent
# The examples are imported by their tests as `examples.NAME`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# TRIOSERVE_TEST_HTTP=h11 (or httptools) runs the suite with that HTTP/1.1 parser, whatever
# a test's config says: in-process servers through the factory, `python -m trioserve` children
# through the environment they inherit (TRIOSERVE_TEST_HTTP itself would be an unknown key).
TEST_HTTP = os.environ.pop("TRIOSERVE_TEST_HTTP", None)
if TEST_HTTP:
    os.environ["TRIOSERVE_HTTP"] = TEST_HTTP

    @pytest.fixture(autouse=True)
    def _force_http_parser(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        from trioserve.sansio import http11_fast

        cls = http11_fast.protocol_class(TEST_HTTP)
        monkeypatch.setattr(http11_fast, "protocol_class", lambda kind: cls)
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_program(name, package=...): skip when the system program is missing "
        "(fail in CI); see tests/programs.py",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    check_markers(item)
