"""The ASGI response extensions over HTTP/3: trailers, early hints (103), pathsend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import Certs, h3_session


async def test_trailers_and_early_hints(certs: Certs, tmp_path: Path) -> None:
    advertised: list[list[str]] = []
    page = tmp_path / "page.bin"
    page.write_bytes(b"p" * 300_000)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        advertised.append(sorted(scope["extensions"]))
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": str(page)})
            return
        await send(
            {
                "type": "http.response.early_hint",
                "links": [b"</style.css>; rel=preload; as=style"],
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"grpc-status", b"0"), (b"connection", b"close")],
            }
        )

    async with h3_session(app, certs) as (_, client):
        result = await client.request(b"/")
        assert result.status == 200
        assert bytes(result.body) == b"body"
        assert result.trailers == [(b"grpc-status", b"0")]  # connection-specific dropped
        assert len(result.informational) == 1
        hint = dict(result.informational[0])
        assert hint[b":status"] == b"103"
        assert hint[b"link"] == b"</style.css>; rel=preload; as=style"
        sent = await client.request(b"/file")
        assert bytes(sent.body) == page.read_bytes()
    assert advertised[0] == [
        "http.response.early_hint",
        "http.response.pathsend",
        "http.response.trailers",
        "tls",
    ]
