"""ASGI response extensions: trailers (HTTP/2; HTTP/1.1 chunked when the request says
``TE: trailers``), early hints (103 on HTTP/2 and HTTP/1.1), pathsend (Starlette's
FileResponse uses it), each advertised only where it works."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

from tests.h2raw import RawH2, close_all, get
from trioserve.testing import open_server

LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    await close_all()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    extensions = scope["extensions"]
    if scope["path"] == "/extensions":
        body = b",".join(sorted(name.encode() for name in extensions if name.startswith("http.")))
        length = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] == "/hints":
        await send({"type": "http.response.early_hint", "links": LINKS})
        length = [(b"content-length", b"4")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"page"})
        return
    # /trailers
    digest = hashlib.sha256(b"part1part2").hexdigest().encode()
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"part1", "more_body": True})
    await send({"type": "http.response.body", "body": b"part2"})
    await send(
        {
            "type": "http.response.trailers",
            "headers": [(b"x-sha256", digest)],
            "more_trailers": True,
        }
    )
    await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2")]})


async def raw_http11(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return data


async def test_extensions_advertised_per_version() -> None:
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/extensions")))
        h2 = (await client.response(1))["body"]
        plain = await raw_http11(
            server.port, b"GET /extensions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        te = await raw_http11(
            server.port,
            b"GET /extensions HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        )
        old = await raw_http11(server.port, b"GET /extensions HTTP/1.0\r\n\r\n")
    assert h2 == b"http.response.early_hint,http.response.pathsend,http.response.trailers"
    assert plain.endswith(b"\r\n\r\nhttp.response.early_hint,http.response.pathsend")
    assert te.endswith(b"http.response.early_hint,http.response.pathsend,http.response.trailers")
    assert old.endswith(b"\r\n\r\nhttp.response.pathsend")


async def test_trailers_over_http2() -> None:
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/trailers", te="trailers")))
        response = await client.response(1)
    assert response["body"] == b"part1part2"
    assert response["trailers"] == {
        b"x-sha256": hashlib.sha256(b"part1part2").hexdigest().encode(),
        b"x-count": b"2",
    }


async def test_trailers_over_http11_chunked_only_when_asked() -> None:
    async with open_server(app) as server:
        asked = await raw_http11(
            server.port,
            b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        )
        not_asked = await raw_http11(
            server.port, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    digest = hashlib.sha256(b"part1part2").hexdigest().encode()
    assert b"transfer-encoding: chunked" in asked.lower()
    assert asked.endswith(b"0\r\nx-sha256: " + digest + b"\r\nx-count: 2\r\n\r\n")
    assert not_asked.endswith(b"5\r\npart2\r\n0\r\n\r\n")


async def test_early_hints_over_http2_and_http11() -> None:
    async with open_server(app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/hints")))
        response = await client.response(1)
        h11 = await raw_http11(
            server.port, b"GET /hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert [hint[b":status"] for hint in response["informational"]] == [b"103"]
    assert response["informational"][0][b"link"] in LINKS  # (two fields; the dict keeps one)
    assert response["headers"][b":status"] == b"200" and response["body"] == b"page"
    assert h11.startswith(
        b"HTTP/1.1 103 Early Hints\r\nlink: " + LINKS[0] + b"\r\nlink: " + LINKS[1] + b"\r\n\r\n"
    )
    assert b"\r\n\r\nHTTP/1.1 200 " in h11 and h11.endswith(b"page")


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    return path


def file_app(path: Path) -> Any:
    async def download(request: Any) -> FileResponse:
        return FileResponse(path)

    seen: list[str] = []
    inner = Starlette(routes=[Route("/file", download)])

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def watch(message: dict[str, Any]) -> None:
            seen.append(message["type"])
            await send(message)

        await inner(scope, receive, watch)

    wrapper.seen = seen  # type: ignore[attr-defined]
    return wrapper


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_starlette_file_response_uses_pathsend(big_file: Path, http2: bool) -> None:
    wrapped = file_app(big_file)
    async with (
        open_server(wrapped) as server,
        httpx.AsyncClient(http1=not http2, http2=http2) as client,
    ):
        response = await client.get(server.url + "/file")
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert response.content == big_file.read_bytes()
    assert "http.response.pathsend" in wrapped.seen
    assert "http.response.body" not in wrapped.seen


async def test_pathsend_respects_http2_flow_control(big_file: Path) -> None:
    """A client that opens little window gets the file only as it reads."""
    wrapped = file_app(big_file)
    async with open_server(wrapped) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/file")))
        response = await client.response(1, timeout=10)
    assert response["body"] == big_file.read_bytes()


def pathsend_app(path: Path, length: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"%d" % path.stat().st_size)] if length else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_pathsend_is_zero_copy_on_cleartext_http11(
    big_file: Path, length: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    calls: list[int] = []
    real = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", spy)
    async with (
        open_server(pathsend_app(big_file, length)) as server,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(server.url + "/")
        again = await client.get(server.url + "/")  # the connection is reused after it
    assert response.content == again.content == big_file.read_bytes()
    assert sum(calls) == 2 * big_file.stat().st_size
    assert (response.headers.get("transfer-encoding") == "chunked") is not length


async def test_pathsend_over_tls_reads_pieces(
    big_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import ssl

    import trustme

    calls: list[int] = []
    monkeypatch.setattr(os, "sendfile", lambda *args: calls.append(1) or 0)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    options = {"certfile": str(tmp_path / "cert.pem"), "keyfile": str(tmp_path / "key.pem")}
    async with (
        open_server(pathsend_app(big_file, True), **options) as server,
        httpx.AsyncClient(verify=context) as client,
    ):
        response = await client.get(server.url + "/")
    assert response.content == big_file.read_bytes() and calls == []


async def test_http2_features_example_over_raw_frames() -> None:
    from examples import http2_features

    async with open_server(http2_features.app) as server:
        client = await RawH2.open(server.port)
        await client.send(client.headers(1, get("/")))
        response = await client.response(1)
    assert [hint[b":status"] for hint in response["informational"]] == [b"103"]
    assert response["body"] == http2_features.PAGE
    digest = hashlib.sha256(http2_features.PAGE).hexdigest().encode()
    assert response["trailers"] == {b"x-body-sha256": digest}
