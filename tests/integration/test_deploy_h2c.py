"""docs/http2.md's deployment: HAProxy speaking h2c (prior knowledge) to trioserve, with
HTTP/1.1 clients in front, their requests multiplexed on HAProxy's backend connections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from trioserve.testing import open_server

from ..programs import require_program, requires_program
from .test_deploy_proxies import external, free_port

HAPROXY_H2C = """
global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server trioserve 127.0.0.1:{backend} proto h2
"""

SEEN: list[str] = []


async def version_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    SEEN.append(scope["http_version"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = json.dumps({"version": scope["http_version"], "size": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": data})


@requires_program("haproxy", package="haproxy")
async def test_haproxy_to_trioserve_over_h2c(tmp_path: Path) -> None:
    SEEN.clear()
    port = free_port()
    async with open_server(version_app) as server:
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_H2C.format(port=port, backend=server.port))
        cmd = [require_program("haproxy", package="haproxy"), "-f", str(cfg), "-db"]
        async with external(cmd, port, tmp_path / "haproxy.log"):
            results: list[dict[str, Any]] = []
            async with httpx.AsyncClient() as client:

                async def one(i: int) -> None:
                    url = f"http://127.0.0.1:{port}/{i}"
                    results.append((await client.post(url, content=b"x" * i * 100)).json())

                async with trio.open_nursery() as nursery:
                    for i in range(20):
                        nursery.start_soon(one, i)
    assert sorted(r["size"] for r in results) == [i * 100 for i in range(20)]
    assert {r["version"] for r in results} == {"2"}
    assert SEEN == ["2"] * 20
