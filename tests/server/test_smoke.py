from __future__ import annotations

import httpx

from examples.hello import app
from trioserve.testing import open_server


async def test_hello_over_loopback() -> None:
    async with open_server(app) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
    assert response.headers["server"] == "trioserve"
    assert "date" in response.headers
