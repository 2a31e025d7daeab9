"""HTTP/2 with real clients: curl (ALPN, prior knowledge, Upgrade: h2c), nghttp, h2load,
httpx; and the h2c Upgrade rules with raw sockets."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx
import pytest
import trio
import trustme

from tests.h2raw import RawH2, close_all
from trioserve.testing import open_server


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not installed (Debian package {package})")
    return path


async def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            list(args), capture_stdout=True, capture_stderr=True, check=False
        )


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the app saw: version, scheme, headers, body length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/big":
        body = b"z" * (1024 * 1024)
    else:
        body = json.dumps(
            {
                "http_version": scope["http_version"],
                "scheme": scope["scheme"],
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "size": size,
                "tls": scope["extensions"].get("tls") is not None,
            }
        ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("h2tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return {
        "ca": str(tmp / "ca.pem"),
        "certfile": str(tmp / "cert.pem"),
        "keyfile": str(tmp / "key.pem"),
    }


def header_names(data: dict[str, Any]) -> set[str]:
    return {name for name, _ in data["headers"]}


async def test_curl_prior_knowledge_and_upgrade() -> None:
    curl = need("curl", "curl")
    async with open_server(echo_scope) as server:
        prior = await run(
            curl,
            "-sS",
            "--http2-prior-knowledge",
            "-w",
            "%{http_version}",
            "--data",
            "abc",
            server.url + "/p",
        )
        upgrade = await run(curl, "-sSv", "--http2", server.url + "/u")
        upgrade_off: subprocess.CompletedProcess[bytes] | None = None
    assert prior.returncode == 0, prior.stderr
    body, version = prior.stdout.rsplit(b"}", 1)
    assert version == b"2"
    data = json.loads(body + b"}")
    assert data["http_version"] == "2" and data["size"] == 3
    assert upgrade.returncode == 0, upgrade.stderr
    assert b"101 Switching Protocols" in upgrade.stderr
    data = json.loads(upgrade.stdout)
    assert data["http_version"] == "2"
    # The upgraded request's scope has no connection-specific fields.
    assert not header_names(data) & {"connection", "upgrade", "http2-settings"}
    assert ["host", f"127.0.0.1:{server.port}"] in data["headers"]
    assert upgrade_off is None


async def test_upgrade_switch_off_and_body_and_tls_decline() -> None:
    curl = need("curl", "curl")
    async with open_server(echo_scope, h2c_upgrade=False) as server:
        off = await run(curl, "-sSv", "--http2", server.url + "/")
    assert b"101" not in off.stderr and json.loads(off.stdout)["http_version"] == "1.1"
    async with open_server(echo_scope) as server:
        # A request with a body is answered over HTTP/1.1 (the upgrade is declined).
        with_body = await run(curl, "-sSv", "--http2", "--data", "x" * 100, server.url + "/")
    assert b"101" not in with_body.stderr
    data = json.loads(with_body.stdout)
    assert data["http_version"] == "1.1" and data["size"] == 100


async def test_upgrade_is_ignored_inside_tls(certs: dict[str, str]) -> None:
    options = {
        "certfile": certs["certfile"],
        "keyfile": certs["keyfile"],
        "alpn_protocols": ["http/1.1"],
    }
    async with open_server(echo_scope, **options) as server:
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", server.port, ssl_context=_client_context(certs, ["http/1.1"])
        )
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        data = b""
        with trio.fail_after(5):
            while b"}" not in data:
                data += await stream.receive_some(65536)
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"http_version": "1.1"' in data


def _client_context(certs: dict[str, str], alpn: list[str]) -> Any:
    import ssl

    context = ssl.create_default_context(cafile=certs["ca"])
    context.set_alpn_protocols(alpn)
    return context


@pytest.mark.parametrize(
    "settings_value",
    [b"!!!notbase64", b"AAMAAA", b"AAUAAAAA"],  # bad base64, 4 bytes (not 6n), frame size 0
    ids=["base64", "length", "range"],
)
async def test_invalid_http2_settings_declines_the_upgrade(settings_value: bytes) -> None:
    async with open_server(echo_scope) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings_value + b"\r\n\r\n"
        )
        data = b""
        with trio.fail_after(5):
            while b"}" not in data:
                data += await stream.receive_some(65536)
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")


async def test_curl_over_tls_alpn(certs: dict[str, str]) -> None:
    curl = need("curl", "curl")
    options = {"certfile": certs["certfile"], "keyfile": certs["keyfile"]}
    async with open_server(echo_scope, **options) as server:
        url = server.url + "/"
        h2 = await run(curl, "-sSv", "--http2", "--cacert", certs["ca"], url)
        h1 = await run(curl, "-sSv", "--http1.1", "--cacert", certs["ca"], url)
    assert b"ALPN: server accepted h2" in h2.stderr
    data = json.loads(h2.stdout)
    assert (data["http_version"], data["scheme"], data["tls"]) == ("2", "https", True)
    assert json.loads(h1.stdout)["http_version"] == "1.1"


async def test_nghttp_many_streams_and_a_big_download() -> None:
    nghttp = need("nghttp", "nghttp2-client")
    async with open_server(echo_scope) as server:
        result = await run(nghttp, "-ns", "-m", "20", server.url + "/a")
        big = await run(nghttp, "-n", "-s", server.url + "/big")
        # The upgrade path, as nghttp does it.
        upgraded = await run(nghttp, "-nu", server.url + "/u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"/a") >= 20
    assert big.returncode == 0, big.stderr
    assert b"1048576" in big.stdout or b"1M" in big.stdout or b"1.0M" in big.stdout, big.stdout
    assert upgraded.returncode == 0, upgraded.stderr


async def test_h2load_hello_and_1mib() -> None:
    h2load = need("h2load", "nghttp2-client")
    async with open_server(echo_scope) as server:
        hello = await run(h2load, "-n", "400", "-c", "4", "-m", "10", server.url + "/")
        big = await run(h2load, "-n", "20", "-c", "2", "-m", "4", server.url + "/big")
    for result in (hello, big):
        assert result.returncode == 0, result.stderr
        assert b"0 failed, 0 errored" in result.stdout, result.stdout
    assert b"400 succeeded" in hello.stdout and b"20 succeeded" in big.stdout


async def test_httpx_http2_concurrent_requests_on_one_connection() -> None:
    results: list[httpx.Response] = []
    async with (
        open_server(echo_scope) as server,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):

        async def one(i: int) -> None:
            results.append(await client.post(server.url + f"/{i}", content=b"q" * i * 1000))

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
    assert len(results) == 40
    assert {r.http_version for r in results} == {"HTTP/2"}
    assert sorted(json.loads(r.text)["size"] for r in results) == [i * 1000 for i in range(40)]


async def test_upgrade_with_raw_frames_serves_stream_1() -> None:
    async with open_server(echo_scope) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Keep: 1\r\n\r\n"
        )
        head = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(len(b"HTTP/1.1 101"))
        assert head.startswith(b"HTTP/1.1 101 ")
        rest = head.split(b"\r\n\r\n", 1)[1]
        client = await RawH2.open(server.port, stream=stream, received=rest)
        response = await client.response(1)
        await close_all()
    data = json.loads(response["body"])
    assert data["http_version"] == "2"
    assert ["x-keep", "1"] in data["headers"]
    assert not header_names(data) & {"connection", "upgrade", "http2-settings"}
