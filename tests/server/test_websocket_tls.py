"""WebSockets over TLS (wss://): the scope says wss and carries the tls extension."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import trio
import trio_websocket
import trustme

from tests.server.test_websocket import Recorder
from trioserve.testing import open_server


async def test_wss_echo_scope_and_tls_extension(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)

    recorder = Recorder()
    options: dict[str, Any] = {"certfile": str(cert_file), "keyfile": str(key_file)}
    async with open_server(recorder, **options) as server:
        assert server.ws_url.startswith("wss://")
        async with trio_websocket.open_websocket_url(server.ws_url, ssl_context=context) as ws:
            await ws.send_message("secret")
            with trio.fail_after(5):
                while not recorder.received:
                    await trio.sleep(0.01)
        with trio.fail_after(5):
            await recorder.done.wait()
        await trio.aclose_forcefully(ws._stream)
    scope = recorder.scopes[0]
    assert scope["scheme"] == "wss"
    assert "tls" in scope["extensions"]
    assert scope["extensions"]["tls"].get("tls_version") in (0x0303, 0x0304)
    assert recorder.received[0] == {"type": "websocket.receive", "text": "secret"}
    assert recorder.disconnects[0]["code"] == 1000
