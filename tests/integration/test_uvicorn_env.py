"""Uvicorn's ``UVICORN_*`` variables and Hypercorn's ``worker_class``, through the real CLI.

The processes bind real ports on 127.0.0.1 and are stopped by their PID (the ``start``
fixture of test_uvicorn_dropin); the configuration's notices are checked as the user sees
them: one log line each, in trioserve's format, with no Python ``warnings`` source line.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx

from tests.integration.test_cli import run_cli
from tests.integration.test_uvicorn_dropin import app_dir, start, uvicorn_command
from trioserve.config import build_config
from trioserve.config_env import UVICORN_MULTIPLE, UVICORN_PARAMS
from trioserve.run import make_config

__all__ = ["app_dir", "start"]  # fixtures, shared

ASYNCIO_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0)  # fails on plain trio: the app needs an asyncio loop
    loop = type(asyncio.get_running_loop()).__name__.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": loop})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[WARNING]" in line]


def test_uvicorn_variables_configure_the_server(start: object, app_dir: Path) -> None:
    port = free_port()
    env = {
        "UVICORN_PORT": str(port),
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_LOG_LEVEL": "trace",
        "UVICORN_ACCESS_LOG": "f",  # click's spelling of false
        "UVICORN_HEADERS": "X-From:uvicorn-env X-Second:2",  # a repeatable flag: spaces
        "UVICORN_PORTT": "1",  # a typo
        "TRIOSERVE_BACKLGO": "5",  # another
    }
    server = start("dropin:app", cwd=app_dir, env=env)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert url == f"http://127.0.0.1:{port}"
    response = httpx.get(url + "/env", timeout=10)
    assert response.status_code == 200
    assert response.headers["x-from"] == "uvicorn-env" and response.headers["x-second"] == "2"
    assert server.stop() == 0
    assert "[TRACE] ASGI [" in server.text  # UVICORN_LOG_LEVEL=trace
    assert '"GET /env HTTP/1.1"' not in server.text  # UVICORN_ACCESS_LOG=f
    # One warning, naming both unknown variables with the closest key, no source line.
    [warning] = warning_lines(server.text)
    assert "UVICORN_PORTT (did you mean UVICORN_PORT?)" in warning
    assert "TRIOSERVE_BACKLGO (did you mean TRIOSERVE_BACKLOG?)" in warning
    assert "warnings.warn" not in server.text and "ConfigWarning" not in server.text


def test_trioserve_variables_win_over_uvicorn_ones(start: object, app_dir: Path) -> None:
    ours, theirs = free_port(), free_port()
    env = {"TRIOSERVE_PORT": str(ours), "UVICORN_PORT": str(theirs)}
    server = start("dropin:app", cwd=app_dir, env=env)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert url == f"http://127.0.0.1:{ours}"
    assert server.stop() == 0
    assert not warning_lines(server.text)


def test_uvicorn_variables_as_click_reads_them() -> None:
    env = {
        "UVICORN_WORKERS": "3",
        "WEB_CONCURRENCY": "2",  # Uvicorn's default for --workers: the variable wins
        "UVICORN_PROXY_HEADERS": "n",
        "UVICORN_RELOAD_DIRS": "src  lib",
        "UVICORN_TIMEOUT_KEEP_ALIVE": "9",
        "UVICORN_FORWARDED_ALLOW_IPS": "10.0.0.1,10.0.0.2",  # one string in Uvicorn
        "UVICORN_APP": "main:app",
        "TRIOSERVE_KEEP_ALIVE_TIMEOUT": "7",  # TRIOSERVE_ wins for the same option
    }
    config = make_config(None, environ=env)
    assert config.workers == 3
    assert config.proxy_headers is False
    assert config.reload_dirs == ["src", "lib"]
    assert config.keep_alive_timeout == 7
    assert config.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]
    assert config.application_path == "main:app"
    assert make_config("m:app", environ={"WEB_CONCURRENCY": "2"}).workers == 2
    # An address on the command line replaces the environment's.
    assert make_config("m:app", environ={"UVICORN_PORT": "9"}, port=7).bind == ["127.0.0.1:7"]


def test_the_uvicorn_parameter_list_is_uvicorns() -> None:
    params = uvicorn_command().params
    assert {p.name for p in params} == UVICORN_PARAMS
    assert {p.name for p in params if getattr(p, "multiple", False)} == UVICORN_MULTIPLE


def test_worker_class_asyncio_runs_the_app_on_asyncio(start: object, tmp_path: Path) -> None:
    (tmp_path / "aioapp.py").write_text(ASYNCIO_APP)
    (tmp_path / "h.toml").write_text('worker_class = "asyncio"\nwsgi_max_body_size = 5\n')
    server = start("aioapp:app", "-c", "h.toml", "--port", "0", cwd=tmp_path)  # type: ignore[operator]
    [url] = server.wait_ready()
    response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 200, server.text
    assert server.stop() == 0
    [info] = [line for line in server.text.splitlines() if "worker_class" in line]
    assert re.search(
        r"\[INFO\] worker_class = \"asyncio\" \(from h\.toml\).*loop = \"asyncio\"", info
    )
    # A configuration warning is one line in the log's format, with no warnings source line.
    [warning] = warning_lines(server.text)
    assert "'wsgi_max_body_size' (from h.toml)" in warning and warning.startswith("[")
    assert "config.py" not in server.text and "ConfigWarning" not in server.text


def test_worker_class_other_than_hypercorns_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "aioapp.py").write_text(ASYNCIO_APP)
    (tmp_path / "h.toml").write_text('worker_class = "gevent"\n')
    result = run_cli("aioapp:app", "-c", "h.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "'worker_class' (from h.toml)" in result.stderr
    assert "expected trio, or asyncio or uvloop" in result.stderr


def test_worker_class_gives_way_to_a_loop_set_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('worker_class = "uvloop"\n')
    assert build_config(config_file=str(path), environ={}).loop == "asyncio"
    path.write_text('worker_class = "uvloop"\nloop = "trio"\n')
    assert build_config(config_file=str(path), environ={}).loop == "trio"
    path.write_text('worker_class = "asyncio"\n')
    config = build_config(config_file=str(path), environ={}, overrides={"loop": "trio"})
    assert config.loop == "trio"  # the command line wins over the file
    assert build_config(environ={}).worker_class == "trio"
