"""Headless Chromium over TLS: the page comes over h2 (its performance entries say
``nextHopProtocol == "h2"``) and its WebSocket goes over HTTP/2 (RFC 8441), which the
server sees as a ``websocket`` scope with ``http_version`` "2"."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from trioserve.testing import open_server

PAGE = b"""<!doctype html><html><head><title>h2</title>
<link rel="stylesheet" href="/style.css"></head><body><p id="out">loading</p>
<script>
async function main() {
  const entries = performance.getEntriesByType("navigation")
    .concat(performance.getEntriesByType("resource"));
  const protocols = entries.map(e => e.nextHopProtocol);
  const echo = await new Promise((resolve) => {
    const ws = new WebSocket("wss://" + location.host + "/ws");
    ws.onopen = () => ws.send("ping over h2");
    ws.onmessage = (event) => { resolve(event.data); ws.close(1000); };
    ws.onerror = () => resolve("websocket error");
  });
  await fetch("/report", {method: "POST", body: JSON.stringify({protocols, echo})});
}
window.addEventListener("load", main);
</script></body></html>"""


class Site:
    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None
        self.reported = trio.Event()
        self.versions: dict[str, str] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            self.versions["ws"] = scope["http_version"]
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            if message["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": "echo: " + message["text"]})
                await receive()
            return
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
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]}
        )
        await send({"type": "http.response.body", "body": content})


async def test_chromium_loads_over_h2_with_a_websocket_over_http2(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package chromium)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    site = Site()
    options = {"certfile": str(tmp_path / "cert.pem"), "keyfile": str(tmp_path / "key.pem")}
    async with open_server(site, **options) as server:
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            f"--user-data-dir={tmp_path / 'profile'}",
            server.url + "/",
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
    assert report["protocols"] and set(report["protocols"]) == {"h2"}, report
    assert report["echo"] == "echo: ping over h2"
    assert site.versions["/"] == "2" and site.versions["/style.css"] == "2"
    assert site.versions["ws"] == "2", site.versions
