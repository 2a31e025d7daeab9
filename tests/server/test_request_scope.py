"""The scope a request gets whichever way the runner builds it: most requests carry none of
the headers that need a closer look (proxy headers, the request id, TE), and those skip the
slow path (ServerState.http_scope); these check that both give what the config asks."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from trioserve.testing import open_server


async def scope_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "client": scope["client"][0],
            "scheme": scope["scheme"],
            "request_id": scope.get("request_id"),
            "extensions": sorted(scope["extensions"]),
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _scope(headers: dict[str, str], **config: Any) -> dict[str, Any]:
    async with open_server(scope_echo, **config) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url, headers=headers)
    result: dict[str, Any] = response.json()
    return result


XFF = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(
    ("allow", "believed"),
    [(["*"], True), (["127.0.0.0/8"], True), (["10.0.0.1", "unix"], False), ([], False)],
)
async def test_proxy_headers_follow_forwarded_allow_ips(allow: list[str], believed: bool) -> None:
    scope = await _scope(XFF, forwarded_allow_ips=allow)
    expected = ("203.0.113.7", "https") if believed else ("127.0.0.1", "http")
    assert (scope["client"], scope["scheme"]) == expected


async def test_proxy_headers_off_leaves_the_peer() -> None:
    scope = await _scope(XFF, proxy_headers=False, forwarded_allow_ips=["*"])
    assert (scope["client"], scope["scheme"]) == ("127.0.0.1", "http")


async def test_a_plain_request_and_one_with_every_watched_header() -> None:
    plain = await _scope({})
    assert plain["client"] == "127.0.0.1"
    assert len(plain["request_id"]) == 32
    assert plain["extensions"] == ["http.response.early_hint", "http.response.pathsend"]
    full = await _scope({**XFF, "X-Request-ID": "given-1", "TE": "trailers"})
    assert (full["client"], full["scheme"], full["request_id"]) == (
        "203.0.113.7",
        "https",
        "given-1",
    )
    assert "http.response.trailers" in full["extensions"]
