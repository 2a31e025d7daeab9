"""open_server: the real server in the test's nursery, failures surfaced to the test."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trioserve.errors import LifespanFailure
from trioserve.testing import open_server, ws_connect

from .apps import Probe


async def test_urls_lifespan_and_graceful_exit() -> None:
    app = Probe()
    async with open_server(app) as server:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.ws_url == f"ws://127.0.0.1:{server.port}"
        assert app.startups == 1
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/")
        assert response.json()["state"] == {"greeting": "hello"}
    assert app.shutdowns == 1


async def test_app_exception_is_raised_when_the_block_ends() -> None:
    with pytest.raises(RuntimeError, match="the app broke"):
        async with open_server(Probe()) as server, httpx.AsyncClient() as client:
            response = await client.get(server.url + "/boom")
            assert response.status_code == 500  # the client still sees what a client would


async def test_app_exception_can_stay_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        open_server(Probe(), raise_app_exceptions=False) as server,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(server.url + "/boom")).status_code == 500
    assert "the app broke" in caplog.text


async def test_failing_body_gets_the_app_exception_as_a_note() -> None:
    with pytest.raises(AssertionError) as info:
        async with open_server(Probe()) as server, httpx.AsyncClient() as client:
            response = await client.get(server.url + "/boom")
            assert response.status_code == 200
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "RuntimeError: the app broke" in notes


async def test_lifespan_failure_is_not_wrapped() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailure, match="no database"):
        async with open_server(app):
            pass  # pragma: no cover


async def test_config_options_reach_the_server() -> None:
    async with open_server(Probe(), include_server_header=False) as server:
        assert server.config.include_server_header is False
        async with httpx.AsyncClient() as client:
            response = await client.get(server.url + "/")
        assert "server" not in response.headers


async def test_ws_connect_to_a_live_server_and_a_url() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"] + "!"})
        await send({"type": "websocket.close", "code": 1000})

    async with open_server(app) as server:
        for target in (server, server.ws_url, server.url):
            async with ws_connect(target, "/chat") as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi!"


async def test_tls_server_and_wss(tmp_path: Any) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": scope["scheme"]})
            await send({"type": "websocket.close"})

    async with open_server(app, certfile=str(certfile), keyfile=str(keyfile)) as server:
        assert server.url.startswith("https://")
        assert server.ws_url.startswith("wss://")
        async with ws_connect(server, "/", ssl_context=client_context) as ws:
            assert await ws.receive_text() == "wss"
