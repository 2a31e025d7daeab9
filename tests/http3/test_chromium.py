"""Headless Chromium over HTTP/3: it loads a page and a stylesheet from trioserve over QUIC
(its performance entries say ``nextHopProtocol == "h3"``), the app sees ``http_version``
"3", and the same origin's TCP port advertises the UDP one with Alt-Svc."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.programs import require_program

from .conftest import Certs, h3_server

PAGE = b"""<!doctype html><html><head><link rel="stylesheet" href="/style.css"></head>
<body><script>
window.addEventListener("load", async () => {
  const entries = performance.getEntriesByType("navigation")
    .concat(performance.getEntriesByType("resource"));
  const protocols = entries.map(e => e.nextHopProtocol);
  await fetch("/report", {method: "POST", body: JSON.stringify({protocols})});
});
</script></body></html>"""


class Site:
    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None
        self.reported = trio.Event()
        self.versions: dict[str, str] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.versions[path] = scope["http_version"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/report":
            self.report = json.loads(body)
            self.reported.set()
            content, kind = b"ok", b"text/plain"
        elif path == "/style.css":
            content, kind = b"p { color: green }", b"text/css"
        else:
            content, kind = PAGE, b"text/html"
        headers = [(b"content-type", kind)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def spki_hash(cert_file: Path) -> str:
    """What --ignore-certificate-errors-spki-list wants: base64(sha256(SubjectPublicKeyInfo))."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def same_port_pair() -> int:
    """A port number free for both TCP and UDP (Chromium's forced QUIC uses the TCP port)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


async def test_chromium_loads_a_page_over_http3(certs: Certs, tmp_path: Path) -> None:
    chromium = require_program("chromium", package="chromium")
    site = Site()
    port = same_port_pair()
    options = {"bind": [f"127.0.0.1:{port}"], "quic_bind": [f"127.0.0.1:{port}"]}
    async with h3_server(site, certs, **options) as server:
        context = ssl.create_default_context(cafile=str(certs.ca_file))
        async with httpx.AsyncClient(verify=context) as http:
            response = await http.get(f"https://localhost:{port}/style.css")
        assert response.headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-quic",
            f"--origin-to-force-quic-on=localhost:{port}",
            "--host-resolver-rules=MAP localhost 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={spki_hash(certs.cert_file)}",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"https://localhost:{port}/",
        ]
        log = open(tmp_path / "chromium.log", "wb")  # noqa: SIM115 - closed below
        proc = await trio.lowlevel.open_process(
            argv, stdout=log, stderr=log, start_new_session=True
        )
        try:
            with trio.move_on_after(60):
                await site.reported.wait()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGTERM)
                with trio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            log.close()
    report = site.report
    assert report is not None, (tmp_path / "chromium.log").read_text(errors="replace")[-3000:]
    assert report["protocols"] and set(report["protocols"]) == {"h3"}, report
    assert site.versions["/"] == "3" and site.versions["/report"] == "3"
