"""Show what the ASGI ``tls`` extension tells an app about the connection.

    trioserve examples.tls_app:app --certfile cert.pem --keyfile key.pem \\
        --ca-certs client-ca.pem --verify-mode CERT_OPTIONAL

``scope["extensions"]["tls"]`` holds the TLS version and cipher suite (IANA numbers, per
the ASGI TLS extension), the server certificate, and the client certificate and its
subject when the client presented one (mutual TLS).
"""

from __future__ import annotations

import json
from typing import Any

TLS_VERSIONS = {0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    tls = scope.get("extensions", {}).get("tls")
    if tls is None:
        info: dict[str, Any] = {"tls": False}
    else:
        info = {
            "tls": True,
            "version": TLS_VERSIONS.get(tls["tls_version"], tls["tls_version"]),
            "cipher_suite": f"0x{tls['cipher_suite']:04x}" if tls["cipher_suite"] else None,
            "client_certificate": bool(tls["client_cert_chain"]),
            "client": tls["client_cert_name"],
        }
    body = json.dumps(info).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
