"""HTTP/3 streams on one QUIC connection each start from their own context (issue 21)."""

from __future__ import annotations

import json

import pytest

from tests.server.test_request_context import app, deployment

from .conftest import Certs, h3_session


@pytest.mark.parametrize("reset", [False, True])
async def test_streams_on_one_connection_start_fresh(certs: Certs, reset: bool) -> None:
    deployment.set("blue")
    async with h3_session(app, certs, reset_contextvars=reset) as (_, client):
        seen = []
        for path in (b"/login", b"/page", b"/page"):
            result = await client.request(path)
            assert result.status == 200
            seen.append(json.loads(result.body))
    expected = {"user": "anonymous", "deployment": "unset" if reset else "blue"}
    assert seen == [expected] * 3
