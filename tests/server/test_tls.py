"""TLS through trio.SSLStream: curl with and without a client certificate, the ASGI tls
extension, ALPN, insecure_bind beside TLS, TLS >= 1.2, an encrypted key, handshake timeout."""

from __future__ import annotations

import json
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization

from trioserve.config import Config
from trioserve.server.serve import create_ssl_context, serve

from ..programs import require_program, requires_program


async def tls_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    tls = scope["extensions"].get("tls")
    body = json.dumps({"scheme": scope["scheme"], "tls": tls, "client": scope["client"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_ca: trustme.CA
    client_ca_file: Path
    client_file: Path  # cert + key, as curl --cert takes them


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client_ca = trustme.CA()
    client = client_ca.issue_cert("client@example.com", common_name="test client")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp / "key.pem"))
    client_ca.cert_pem.write_to_path(str(tmp / "client_ca.pem"))
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp / "client.pem"))
    return Certs(
        ca,
        tmp / "ca.pem",
        tmp / "cert.pem",
        tmp / "key.pem",
        client_ca,
        tmp / "client_ca.pem",
        tmp / "client.pem",
    )


@asynccontextmanager
async def tls_server(certs: Certs, **options: Any) -> AsyncIterator[list[str]]:
    base: dict[str, Any] = {
        "bind": ["127.0.0.1:0"],
        "certfile": str(certs.cert_file),
        "keyfile": str(certs.key_file),
    }
    config = Config.from_mapping({**base, **options})
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, tls_app, config, shutdown_trigger=trigger))
        try:
            yield urls
        finally:
            trigger.set()


def client_context(certs: Certs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    return context


CURL = requires_program("curl", package="curl")


def curl() -> str:
    return require_program("curl", package="curl")


async def run_curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [curl(), "-sS", "--max-time", "10", *args]
    return await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)


@CURL
async def test_curl_over_tls_without_client_cert(certs: Certs) -> None:
    async with tls_server(certs) as urls:
        assert urls[0].startswith("https://127.0.0.1:")
        result = await run_curl("--cacert", str(certs.ca_file), "-v", urls[0] + "/")
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["scheme"] == "https"
    tls = data["tls"]
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert tls["server_cert"].strip() == certs.cert_file.read_text().strip()
    # ALPN: curl offers h2 and gets it; the tls extension is the same over HTTP/2.
    assert "ALPN: server accepted h2" in result.stderr.decode()


@CURL
async def test_mtls_with_and_without_client_cert(certs: Certs) -> None:
    options = {"ca_certs": str(certs.client_ca_file), "verify_mode": "CERT_REQUIRED"}
    async with tls_server(certs, **options) as urls:
        ok = await run_curl(
            "--cacert", str(certs.ca_file), "--cert", str(certs.client_file), urls[0] + "/"
        )
        refused = await run_curl("--cacert", str(certs.ca_file), urls[0] + "/")
    assert ok.returncode == 0, ok.stderr.decode()
    tls = json.loads(ok.stdout)["tls"]
    assert len(tls["client_cert_chain"]) == 1
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert "CN=test client" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None
    assert refused.returncode != 0
    assert refused.stdout == b""


@CURL
async def test_insecure_bind_beside_tls(certs: Certs) -> None:
    async with tls_server(certs, insecure_bind=["127.0.0.1:0"]) as urls:
        secure, plain = urls
        assert secure.startswith("https://") and plain.startswith("http://")
        r1 = await run_curl("--cacert", str(certs.ca_file), secure + "/")
        r2 = await run_curl(plain + "/")
    assert json.loads(r1.stdout)["scheme"] == "https"
    data = json.loads(r2.stdout)
    assert data["scheme"] == "http"
    assert data["tls"] is None


@pytest.mark.parametrize(
    ("alpn_protocols", "offered", "selected"),
    [
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["http/1.1"], ["h2", "http/1.1"], "http/1.1"),
        (["h2", "spdy/3", "http/1.1"], ["spdy/3", "http/1.1"], "http/1.1"),
    ],
)
async def test_alpn_offers_what_alpn_protocols_says_and_we_serve(
    certs: Certs, alpn_protocols: list[str], offered: list[str], selected: str
) -> None:
    async with tls_server(certs, alpn_protocols=alpn_protocols) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        context = client_context(certs)
        context.set_alpn_protocols(offered)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == selected
        await tls.aclose()


async def test_old_tls_versions_refused(certs: Certs) -> None:
    context = create_ssl_context(
        Config(certfile=str(certs.cert_file), keyfile=str(certs.key_file))
    )
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    async with tls_server(certs) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        client = client_context(certs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            client.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            client.set_ciphers("ALL:@SECLEVEL=0")
        except ssl.SSLError:  # pragma: no cover
            pass
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(stream, client, server_hostname="127.0.0.1")
        with pytest.raises(trio.BrokenResourceError):
            await tls.do_handshake()
        await trio.aclose_forcefully(tls)


@CURL
async def test_encrypted_key_with_password(certs: Certs, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(certs.key_file.read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "enc.pem").write_bytes(encrypted)
    options = {"keyfile": str(tmp_path / "enc.pem"), "keyfile_password": "s3cret"}
    async with tls_server(certs, **options) as urls:
        result = await run_curl("--cacert", str(certs.ca_file), urls[0] + "/")
    assert result.returncode == 0, result.stderr.decode()
    with pytest.raises(ssl.SSLError):
        create_ssl_context(
            Config(
                certfile=str(certs.cert_file),
                keyfile=str(tmp_path / "enc.pem"),
                keyfile_password="wrong",
            )
        )


@CURL
async def test_stalled_handshake_is_cut_at_the_timeout(certs: Certs) -> None:
    async with tls_server(certs, ssl_handshake_timeout=0.5) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        with trio.fail_after(5):
            data = await stream.receive_some(1024)  # we never send a ClientHello
        elapsed = trio.current_time() - start
        await stream.aclose()
        # Other connections are unaffected.
        result = await run_curl("--cacert", str(certs.ca_file), urls[0] + "/")
    assert data == b""
    assert 0.4 <= elapsed < 2.0
    assert result.returncode == 0


async def test_proxy_protocol_header_before_tls(certs: Certs) -> None:
    """The PROXY header is read with MSG_PEEK, so TLS starts exactly after it."""
    async with tls_server(certs, proxy_protocol=True) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"PROXY TCP4 192.0.2.77 127.0.0.1 51000 443\r\n")
        tls = trio.SSLStream(stream, client_context(certs), server_hostname="127.0.0.1")
        await tls.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while True:
                try:
                    chunk = await tls.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
        await trio.aclose_forcefully(tls)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    chunked = b"transfer-encoding: chunked" in head.lower()
    data = json.loads(body.split(b"\r\n")[1] if chunked else body)
    assert data["scheme"] == "https"
    assert data["client"] == ["192.0.2.77", 51000]
    assert data["tls"]["tls_version"] in (0x0303, 0x0304)


@pytest.mark.parametrize(("ssl_version", "expected"), [(None, "TLSv1.3"), (5, "TLSv1.2")])
async def test_uvicorn_ssl_version_pins_the_protocol(
    certs: Certs, ssl_version: int | None, expected: str
) -> None:
    """Uvicorn's --ssl-version 5 (PROTOCOL_TLSv1_2): a TLS 1.3 client gets TLS 1.2."""
    options = {} if ssl_version is None else {"ssl_version": ssl_version}
    async with tls_server(certs, **options) as urls:
        port = int(urls[0].rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(stream, client_context(certs), server_hostname="127.0.0.1")
        await tls.do_handshake()
        assert tls.version() == expected
        await tls.aclose()
