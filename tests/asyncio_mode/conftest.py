from __future__ import annotations

from collections.abc import Iterator

import pytest

from .services import Postgres, Redis, run_postgres, run_redis


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with run_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    with run_redis() as server:
        yield server
