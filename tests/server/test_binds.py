"""Binds over real sockets: IPv4, IPv6, unix (umask), several at once, fd://N, --fd and
systemd socket activation (LISTEN_FDS/LISTEN_PID) in a real trioserve process."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioserve.binds import Bind, binds_from_config, parse_bind, systemd_fds
from trioserve.config import Config, ConfigError
from trioserve.server.serve import serve

from ..programs import require_program, requires_program

ROOT = Path(__file__).resolve().parent.parent.parent

APP_SOURCE = """
import json, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({
        "pid": os.getpid(),
        "listen_fds": os.environ.get("LISTEN_FDS"),
        "client": scope["client"],
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"server": scope["server"], "client": scope["client"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_parse_bind_forms() -> None:
    assert parse_bind("127.0.0.1:80") == Bind("tcp", host="127.0.0.1", port=80)
    assert parse_bind("[::1]:81") == Bind("tcp", host="::1", port=81)
    assert parse_bind("localhost") == Bind("tcp", host="localhost", port=8000)
    assert parse_bind("unix:/run/a.sock") == Bind("unix", path="/run/a.sock")
    assert parse_bind("fd://3") == Bind("fd", fd=3)
    for bad in ("::1:80", "[::1", "h:port", "h:70000", "unix:", "fd://x"):
        with pytest.raises(ConfigError):
            parse_bind(bad)


def test_systemd_fds_only_for_our_pid() -> None:
    me = str(os.getpid())
    assert systemd_fds({"LISTEN_PID": me, "LISTEN_FDS": "2"}) == [3, 4]
    assert systemd_fds({"LISTEN_PID": "1", "LISTEN_FDS": "2"}) == []
    assert systemd_fds({"LISTEN_FDS": "2"}) == []
    env = {"LISTEN_PID": me, "LISTEN_FDS": "1"}
    assert [str(b) for b in binds_from_config(Config(), env)] == ["fd://3"]
    both = binds_from_config(Config(bind=["127.0.0.1:9"]), env)
    assert [str(b) for b in both] == ["fd://3", "127.0.0.1:9"]


async def test_ipv4_ipv6_and_unix_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    config = Config(bind=["127.0.0.1:0", "[::1]:0", f"unix:{path}"], umask=0o077)
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, whoami, config, shutdown_trigger=trigger))
        assert urls[0].startswith("http://127.0.0.1:")
        assert urls[1].startswith("http://[::1]:")
        assert urls[2] == f"http+unix://{path}"
        async with httpx.AsyncClient() as client:
            r4 = await client.get(urls[0])
            r6 = await client.get(urls[1])
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))) as c:
            ru = await c.get("http://localhost/")
        trigger.set()
    assert r4.json()["client"][0] == "127.0.0.1"
    assert r6.json()["client"][0] == "::1"
    assert ru.status_code == 200
    assert ru.json()["client"] is None
    assert ru.json()["server"] == [str(path), None]
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else None
    assert mode in (None, 0o700)


async def test_unix_socket_umask_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "u.sock"
    config = Config(bind=[f"unix:{path}"], umask=0o077, user=os.getuid(), group=os.getgid())
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, whoami, config, shutdown_trigger=trigger))
        info = os.stat(path)
        trigger.set()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


async def test_fd_bind_in_process() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = Config(bind=[f"fd://{sock.detach()}"])
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, whoami, config, shutdown_trigger=trigger))
        assert urls == [f"http://127.0.0.1:{port}"]
        async with httpx.AsyncClient() as client:
            response = await client.get(urls[0])
        trigger.set()
    assert response.status_code == 200


async def test_fd_bind_that_is_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as handle:
        config = Config(bind=[f"fd://{handle.fileno()}"])
        with pytest.raises(ConfigError, match="fd://"):
            await serve(whoami, config)


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def _run(cmd: list[str], fd: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    (tmp_path / "fdapp.py").write_text(APP_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "TRIOSERVE_"))}
    return subprocess.Popen(
        cmd, pass_fds=(fd,), env=env, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hang is a failure
        proc.kill()
        proc.communicate()
        raise
    return err


def _get(port: int) -> dict[str, Any]:
    # The kernel queues our connection on the inherited listening socket, so no waiting for
    # the server to "come up" is needed: the request is answered once it accepts.
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=20)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_uvicorn_fd_flag_in_a_real_process(tmp_path: Path) -> None:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "trioserve", "fdapp:app", "--fd", str(sock.fileno())]
    proc = _run(cmd, sock.fileno(), tmp_path)
    sock.close()
    try:
        data = _get(port)
    finally:
        err = _stop(proc)
    assert data["pid"] == proc.pid
    assert proc.returncode == 0, err.decode()
    assert f"Running on http://127.0.0.1:{port}" in err.decode()


def test_systemd_socket_activation_in_a_real_process(tmp_path: Path) -> None:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    # Like systemd: the socket at fd 3, LISTEN_PID set to the server's own pid (it survives
    # exec), no --bind given.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.close(int(sys.argv[1])); "
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
        "os.execv(sys.executable, [sys.executable, '-m', 'trioserve', 'fdapp:app'])"
    )
    cmd = [sys.executable, "-c", launcher, str(sock.fileno())]
    proc = _run(cmd, sock.fileno(), tmp_path)
    sock.close()
    try:
        data = _get(port)
    finally:
        err = _stop(proc)
    assert data["pid"] == proc.pid
    assert data["listen_fds"] is None  # consumed, so children do not take it too
    assert proc.returncode == 0, err.decode()
    assert f"Running on http://127.0.0.1:{port}" in err.decode()
    assert "127.0.0.1:8000" not in err.decode()


@requires_program("ss", package="iproute2")
async def test_backlog_reaches_the_listening_socket() -> None:
    """``ss`` shows a listening socket's backlog in its Send-Q column."""
    ss = require_program("ss", package="iproute2")
    config = Config(bind=["127.0.0.1:0"], backlog=77)
    trigger = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, whoami, config, shutdown_trigger=trigger))
        port = int(urls[0].rsplit(":", 1)[1])
        result = await trio.run_process(
            [ss, "-ltn", f"sport = :{port}"], capture_stdout=True, check=True
        )
        trigger.set()
    rows = [line.split() for line in result.stdout.decode().splitlines()[1:] if line.strip()]
    assert len(rows) == 1
    assert rows[0][0] == "LISTEN"
    assert rows[0][2] == "77"
