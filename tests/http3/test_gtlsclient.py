"""ngtcp2's gtlsclient (Debian ngtcp2-client) against the server: GET, POST upload, many
streams on one connection. Files land in --download; the app's answers are checked."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.programs import requires_program

from .conftest import Certs, h3_server

pytestmark = requires_program("gtlsclient", package="ngtcp2-client")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"].startswith("/big"):
        body = bytes(range(256)) * 4096  # 1 MiB
    else:
        body = f"{scope['method']} {scope['path']} {size} {digest.hexdigest()}".encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def gtlsclient(port: int, *args: str, directory: Path) -> str:
    command = [
        "gtlsclient",
        "--exit-on-all-streams-close",
        "--no-quic-dump",
        "--no-http-dump",
        "--download",
        str(directory),
        "--timeout=10s",
        *args,
    ]
    with trio.fail_after(30):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


async def test_get(certs: Certs, tmp_path: Path) -> None:
    async with h3_server(app, certs) as server:
        port = str(server.port)
        await gtlsclient(
            server.port, "127.0.0.1", port, f"https://localhost:{port}/big", directory=tmp_path
        )
        assert (tmp_path / "big").read_bytes() == bytes(range(256)) * 4096


async def test_post_upload(certs: Certs, tmp_path: Path) -> None:
    data = tmp_path / "upload.bin"
    payload = bytes(range(256)) * 8192  # 2 MiB: several receive windows
    data.write_bytes(payload)
    out = tmp_path / "out"
    out.mkdir()
    async with h3_server(app, certs) as server:
        port = str(server.port)
        await gtlsclient(
            server.port,
            "-m",
            "POST",
            "-d",
            str(data),
            "127.0.0.1",
            port,
            f"https://localhost:{port}/upload",
            directory=out,
        )
    expected = f"POST /upload {len(payload)} {hashlib.sha256(payload).hexdigest()}"
    assert (out / "upload").read_text() == expected


async def test_many_streams(certs: Certs, tmp_path: Path) -> None:
    async with h3_server(app, certs, h3_max_concurrent_streams=10) as server:
        port = str(server.port)
        uris = [f"https://localhost:{port}/s{i}" for i in range(30)]
        await gtlsclient(server.port, "127.0.0.1", port, *uris, directory=tmp_path)
    for i in range(30):
        text = (tmp_path / f"s{i}").read_text()
        assert text.startswith(f"GET /s{i} 0 "), (i, text)


@pytest.mark.parametrize("rebinding", [False, True], ids=["migration", "nat-rebinding"])
async def test_client_address_change(certs: Certs, tmp_path: Path, rebinding: bool) -> None:
    """The client moves to a new local port after the handshake (with path validation, or
    silently as a NAT would); datagrams are routed by connection ID, so the request made
    after the move is served on the same connection."""
    async with h3_server(app, certs) as server:
        port = str(server.port)
        extra = ["--nat-rebinding"] if rebinding else []
        await gtlsclient(
            server.port,
            "--change-local-addr=200ms",
            "--delay-stream=600ms",
            *extra,
            "127.0.0.1",
            port,
            f"https://localhost:{port}/big",
            directory=tmp_path,
        )
        assert (tmp_path / "big").read_bytes() == bytes(range(256)) * 4096
