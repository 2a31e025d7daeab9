"""HTTP/2 features from an ASGI app: early hints, trailers, and a file sent with pathsend.

Run it with TLS so browsers use HTTP/2 (``trioserve examples.http2_features:app
--certfile cert.pem --keyfile key.pem``), or over cleartext with a client that speaks h2c
(``curl --http2-prior-knowledge http://127.0.0.1:8000/``). Each feature is used only when
the scope says the connection offers it (see docs/http2.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PAGE = b"<!doctype html><link rel=stylesheet href=/style.css><p>hello over HTTP/2</p>\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    extensions = scope.get("extensions", {})
    if scope["path"] == "/source":  # this file, by the server (sendfile where it can)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if "http.response.pathsend" in extensions:
            await send({"type": "http.response.pathsend", "path": str(HERE)})
        else:
            await send({"type": "http.response.body", "body": HERE.read_bytes()})
        return
    if "http.response.early_hint" in extensions:  # 103: the browser may fetch it already
        await send(
            {"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]}
        )
    trailers = "http.response.trailers" in extensions
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    await send(
        {"type": "http.response.start", "status": 200, "headers": headers, "trailers": trailers}
    )
    await send({"type": "http.response.body", "body": PAGE})
    if trailers:  # a digest of the body, known only once it was sent
        digest = hashlib.sha256(PAGE).hexdigest().encode()
        await send({"type": "http.response.trailers", "headers": [(b"x-body-sha256", digest)]})
