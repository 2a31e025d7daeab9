"""trioserve behind real proxies, started here on 127.0.0.1 and stopped by PID.

* nginx terminating TLS and proxying HTTP and WebSockets: the app sees the real client
  (the test connects from 127.0.0.2, nginx from 127.0.0.1) and the scheme https / wss.
* HAProxy in TCP mode sending the PROXY protocol v1 and v2: the app sees the client's
  address and port.

nginx and haproxy are Debian packages that ``.ci/run`` installs; without them these tests
skip (and fail in CI, see tests/programs.py).
"""

from __future__ import annotations

import contextvars
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from websockets.sync.client import connect as ws_connect

from trioserve.testing import open_server

from ..programs import require_program, requires_program

NGINX = requires_program("nginx", package="nginx")

CLIENT_IP = "127.0.0.2"  # anything in 127/8 is loopback on Linux: a distinct real client


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    info = {
        "type": scope["type"],
        "client": scope["client"],
        "scheme": scope["scheme"],
        "host": dict(scope["headers"]).get(b"host", b"").decode(),
        "server": scope["server"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
    }
    if scope["type"] == "http":
        body = json.dumps(info).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text") or ""
            await send({"type": "websocket.send", "text": json.dumps({**info, "echo": text})})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(port: int, proc: trio.Process, log: Path) -> None:
    """External servers have no readiness signal: poll the port, bounded."""
    with trio.fail_after(10):
        while True:
            assert proc.returncode is None, f"exited {proc.returncode}: {log.read_text()}"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def external(cmd: list[str], port: int, log: Path) -> AsyncIterator[trio.Process]:
    """Run a proxy in the foreground; stop it by its PID and wait for it."""
    with open(log, "ab") as out:
        proc = await trio.lowlevel.open_process(cmd, stdout=out, stderr=out)
    try:
        await wait_for_port(port, proc, log)
        yield proc
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, 15)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:  # pragma: no cover
                proc.kill()
                await proc.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("nginx-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    return tmp / "ca.pem", tmp / "server.pem", tmp


NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' {plain_connection}; }}
    upstream trioserve {{ server 127.0.0.1:{backend}; keepalive 4; keepalive_timeout 4s; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        location / {{
            proxy_pass http://trioserve;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            {extra}
        }}
    }}
}}
"""


@asynccontextmanager
async def nginx(
    backend: int,
    certs: tuple[Path, Path, Path],
    extra: str = "",
    plain_connection: str = "close",  # "''" keeps upstream connections (examples/nginx.conf)
) -> AsyncIterator[int]:
    _, pem, tmp = certs
    port = free_port()
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp,
            port=port,
            backend=backend,
            pem=pem,
            extra=extra,
            plain_connection=plain_connection,
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    exe = require_program("nginx", package="nginx")
    cmd = [exe, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")]
    async with external(cmd, port, tmp / "nginx-stdout.log"):
        yield port


def client_ssl(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@NGINX
async def test_nginx_https_proxy_passes_real_client_and_scheme(
    certs: tuple[Path, Path, Path],
) -> None:
    ca = certs[0]
    async with open_server(whoami) as server, nginx(server.port, certs) as port:
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_IP, verify=client_ssl(ca))
        async with httpx.AsyncClient(transport=transport) as client:
            responses = [await client.get(f"https://localhost:{port}/a") for _ in range(3)]
    for response in responses:
        assert response.status_code == 200
        data = response.json()
        assert data["client"][0] == CLIENT_IP  # not nginx's 127.0.0.1
        assert data["scheme"] == "https"
        assert data["host"] == "localhost"


@NGINX
async def test_spoofed_header_through_nginx_is_not_believed(
    certs: tuple[Path, Path, Path],
) -> None:
    ca = certs[0]
    async with open_server(whoami) as server, nginx(server.port, certs) as port:
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_IP, verify=client_ssl(ca))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(
                f"https://localhost:{port}/", headers={"x-forwarded-for": "6.6.6.6"}
            )
    # nginx appends the real address; 6.6.6.6 (left of it) came from the client.
    assert response.json()["client"][0] == CLIENT_IP


POISON = {
    "x-forwarded-host": "evil.example",
    "x-forwarded-port": "1",
    "x-forwarded-prefix": "/evil",
    "forwarded": "for=198.51.100.1;proto=http;host=evil.example",
}


@NGINX
async def test_client_proxy_headers_through_nginx_cannot_poison_host_or_client(
    certs: tuple[Path, Path, Path],
) -> None:
    """nginx passes headers it does not set straight through: by default none is believed."""
    ca = certs[0]
    async with open_server(whoami) as server, nginx(server.port, certs) as port:
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_IP, verify=client_ssl(ca))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://localhost:{port}/a/b", headers=POISON)
    assert response.status_code == 200
    data = response.json()
    assert data["client"][0] == CLIENT_IP  # X-Forwarded-For from nginx, not for=198.51.100.1
    assert data["scheme"] == "https"  # X-Forwarded-Proto from nginx, not proto=http
    assert data["host"] == "localhost"
    assert data["server"] == ["127.0.0.1", server.port]
    assert (data["root_path"], data["path"], data["raw_path"]) == ("", "/a/b", "/a/b")


@NGINX
async def test_forwarded_host_opt_in_behind_nginx_that_sets_it(
    certs: tuple[Path, Path, Path],
) -> None:
    """Opted in, X-Forwarded-Host is honoured - here nginx overwrites the client's own."""
    ca = certs[0]
    extra = "proxy_set_header X-Forwarded-Host $host:$server_port;"
    async with (
        open_server(
            whoami, forwarded_headers=["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
        ) as server,
        nginx(server.port, certs, extra=extra) as port,
    ):
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_IP, verify=client_ssl(ca))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://localhost:{port}/", headers=POISON)
    data = response.json()
    assert data["host"] == f"localhost:{port}"  # nginx's value, not evil.example
    assert data["client"][0] == CLIENT_IP
    assert data["server"] == ["127.0.0.1", server.port]


@NGINX
async def test_nginx_websocket_proxy(certs: tuple[Path, Path, Path]) -> None:
    ca = certs[0]
    async with open_server(whoami) as server, nginx(server.port, certs) as port:

        def talk() -> dict[str, Any]:
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=10, source_address=(CLIENT_IP, 0)
            )
            with ws_connect(
                f"wss://localhost:{port}/ws",
                sock=sock,
                ssl=client_ssl(ca),
                proxy=None,
                open_timeout=10,
            ) as ws:
                ws.send("hello")
                reply: dict[str, Any] = json.loads(ws.recv(timeout=10))
                return reply

        data = await trio.to_thread.run_sync(talk)
    assert data["type"] == "websocket"
    assert data["echo"] == "hello"
    assert data["client"][0] == CLIENT_IP
    assert data["scheme"] == "wss"


HAPROXY_CFG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{port1}
    default_backend v1
backend v1
    server trioserve 127.0.0.1:{backend} send-proxy
frontend v2
    bind 127.0.0.1:{port2}
    default_backend v2
backend v2
    server trioserve 127.0.0.1:{backend} send-proxy-v2
"""


@requires_program("haproxy", package="haproxy")
async def test_haproxy_proxy_protocol_v1_and_v2(tmp_path: Path) -> None:
    port1, port2 = free_port(), free_port()
    async with open_server(whoami, proxy_protocol=True) as server:
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port1=port1, port2=port2, backend=server.port))
        cmd = [require_program("haproxy", package="haproxy"), "-f", str(cfg), "-db"]
        async with external(cmd, port1, tmp_path / "haproxy.log"):
            results = {}
            for name, port in (("v1", port1), ("v2", port2)):
                transport = httpx.AsyncHTTPTransport(local_address=CLIENT_IP)
                async with httpx.AsyncClient(transport=transport) as client:
                    results[name] = (await client.get(f"http://127.0.0.1:{port}/")).json()
    for data in results.values():
        assert data["client"][0] == CLIENT_IP
        assert data["client"][1] > 0
        assert data["scheme"] == "http"


current_user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")


async def login_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/login sets the user (as an auth middleware would) and never resets it."""
    if scope["type"] != "http":
        return
    seen = {"user": current_user.get(), "upstream": scope["client"]}
    if scope["path"] == "/login":
        current_user.set("alice")
    body = json.dumps(seen).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@NGINX
async def test_users_behind_nginx_keepalive_never_share_contextvars(
    certs: tuple[Path, Path, Path],
) -> None:
    """nginx's upstream keepalive (examples/nginx.conf) carries several users' requests on
    one connection to trioserve: one user's ContextVar must not reach the others."""
    ca = certs[0]
    # No proxy headers, so scope["client"] names nginx's upstream connection.
    async with (
        open_server(login_app, proxy_headers=False) as server,
        nginx(server.port, certs, plain_connection="''") as port,
    ):
        url = f"https://localhost:{port}"
        async with httpx.AsyncClient(verify=client_ssl(ca)) as alice:
            login = (await alice.get(f"{url}/login")).json()
        pages = []
        for _ in range(3):  # three other clients, each on its own connection to nginx
            async with httpx.AsyncClient(verify=client_ssl(ca)) as other:
                pages.append((await other.get(f"{url}/page")).json())
    assert login["user"] == "anonymous"
    assert [page["user"] for page in pages] == ["anonymous"] * 3
    # The test means something only if nginx did reuse alice's upstream connection.
    assert login["upstream"] in [page["upstream"] for page in pages]
