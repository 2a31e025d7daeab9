"""The deployment examples are real: the TOML loads, nginx and HAProxy accept their files,
the systemd units and the Dockerfile's command parse, and the TLS example serves."""

from __future__ import annotations

import configparser
import json
import re
import ssl
import subprocess
import warnings
from functools import partial
from pathlib import Path

import httpx
import trio
import trustme

from examples.tls_app import app as tls_app
from trioserve.cli import build_parser
from trioserve.config import Config, build_config
from trioserve.server.serve import serve

from ..programs import require_program, requires_program

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def test_server_toml_loads_cleanly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even an "unimplemented key" warning
        config = build_config(config_file=str(EXAMPLES / "server.toml"), environ={})
    assert config.bind == ["127.0.0.1:8000", "unix:/run/trioserve/app.sock"]
    assert config.umask == 0o007
    assert config.max_request_body_size == 10 * 1024 * 1024
    assert config.limit_concurrency == 1000
    assert "%({user-agent}i)s" in config.access_log_format
    assert "%(X)s" in config.access_log_format
    assert (config.request_body_timeout, config.request_body_min_rate) == (20, 500)
    assert config.send_timeout == 60


def test_nginx_example_drops_idle_upstream_connections_before_trioserve() -> None:
    """The keep-alive rule of docs/deployment.md, held by the examples that teach it: nginx
    must close an idle upstream connection before trioserve does, or it may reuse one that
    trioserve is closing (a 502)."""
    site = (EXAMPLES / "nginx.conf").read_text()
    upstream = re.search(r"upstream trioserve \{(.*?)\n\}", site, re.S)
    assert upstream, "examples/nginx.conf has no upstream block"
    timeout = re.search(r"^\s*keepalive_timeout (\d+)s;", upstream.group(1), re.M)
    assert timeout, "the upstream block must set keepalive_timeout (nginx's default is 60 s)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        toml = build_config(config_file=str(EXAMPLES / "server.toml"), environ={})
    assert int(timeout.group(1)) < toml.keep_alive_timeout
    assert int(timeout.group(1)) < Config().keep_alive_timeout


@requires_program("nginx", package="nginx")
def test_nginx_site_is_valid(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("example.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "site.pem"))
    site = (EXAMPLES / "nginx.conf").read_text()
    site = site.replace("/etc/ssl/certs/example.com.pem", str(tmp_path / "site.pem"))
    site = site.replace("/etc/ssl/private/example.com.key", str(tmp_path / "site.pem"))
    site = re.sub(r"listen (80|443)", lambda m: f"listen 127.0.0.1:{int(m[1]) + 18000}", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events { worker_connections 16; }\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        [
            require_program("nginx", package="nginx"),
            "-t",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "error.log"),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@requires_program("haproxy", package="haproxy")
def test_haproxy_cfg_is_valid() -> None:
    result = subprocess.run(
        [require_program("haproxy", package="haproxy"), "-c", "-f", str(EXAMPLES / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "send-proxy-v2" in (EXAMPLES / "haproxy.cfg").read_text()


@requires_program("haproxy", package="haproxy")
def test_haproxy_readyz_cfg_is_valid() -> None:
    """Valid here; run for real (as root) by test_rolling_deploy.py."""
    result = subprocess.run(
        [
            require_program("haproxy", package="haproxy"),
            "-c",
            "-f",
            str(EXAMPLES / "haproxy-readyz.cfg"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "option httpchk GET /readyz" in (EXAMPLES / "haproxy-readyz.cfg").read_text()


def test_systemd_units() -> None:
    socket_unit = configparser.ConfigParser(strict=False)
    socket_unit.read(EXAMPLES / "trioserve.socket")
    assert socket_unit["Socket"]["ListenStream"]
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(EXAMPLES / "trioserve.service")
    exec_start = service["Service"]["ExecStart"].split()
    assert exec_start[0].endswith("/trioserve")
    args = vars(build_parser().parse_args(exec_start[1:]))
    assert args["app"] == "main:app"
    assert "bind" not in args  # the socket comes from systemd
    assert service["Unit"]["Requires"] == "trioserve.socket"


def test_dockerfile_command_parses() -> None:
    text = (EXAMPLES / "Dockerfile").read_text()
    match = re.search(r"^CMD (\[.*?\])", text.replace("\\\n", " "), re.M | re.S)
    assert match, "no exec-form CMD"
    cmd = json.loads(match[1])
    assert cmd[0] == "trioserve"
    args = vars(build_parser().parse_args(cmd[1:]))
    assert args["host"] == "0.0.0.0"
    assert args["forwarded_allow_ips"] == "10.0.0.0/8"


async def test_tls_example_shows_the_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("client@example.com", common_name="alice")
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    config = Config(
        bind=["127.0.0.1:0"],
        certfile=str(tmp_path / "cert.pem"),
        keyfile=str(tmp_path / "key.pem"),
        ca_certs=str(tmp_path / "ca.pem"),
        verify_mode="CERT_OPTIONAL",
    )
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, tls_app, config, shutdown_trigger=trigger))
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(verify=context) as client:
            anonymous = (await client.get(urls[0])).json()
        context.load_cert_chain(str(tmp_path / "client.pem"))
        async with httpx.AsyncClient(verify=context) as client:
            alice = (await client.get(urls[0])).json()
        trigger.set()
    assert anonymous["tls"] is True
    assert anonymous["client_certificate"] is False
    assert anonymous["version"] in ("TLS 1.2", "TLS 1.3")
    assert alice["client_certificate"] is True
    assert "CN=alice" in alice["client"]
