"""HTTP/3 requests through aioquic's client: GET, POST, scope, headers."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Certs, h3_session


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    info = {
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
        "tls_version": scope["extensions"].get("tls", {}).get("tls_version"),
        "length": len(body),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(info).encode()})


async def test_get_and_post(certs: Certs) -> None:
    async with h3_session(echo_app, certs) as (_, client):
        result = await client.request(
            b"/a?x=1", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")]
        )
        assert result.status == 200
        info = json.loads(result.body)
        assert info["http_version"] == "3"
        assert info["scheme"] == "https"
        assert info["path"] == "/a"
        assert info["query"] == "x=1"
        assert ["host", "localhost"] in info["headers"]
        assert ["cookie", "a=1; b=2"] in info["headers"]
        assert info["tls_version"] == 0x0304
        result = await client.request(b"/up", method=b"POST", body=b"x" * 300_000)
        assert json.loads(result.body)["length"] == 300_000
