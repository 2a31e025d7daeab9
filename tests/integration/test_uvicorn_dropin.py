"""Switching from Uvicorn: its flags, keywords, logger names and habits work here.

Each test runs the real ``trioserve`` command (or a script calling ``trioserve.run``) in a
subprocess and talks to it over loopback; see ``test_cli.Server`` for the process helper.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_cli import ROOT, TRIOSERVE, Server, run_cli
from tests.programs import require_program, requires_program

APP = """
import json, logging, os

async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text") or ""})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    logging.getLogger("uvicorn.error").info("app says hello via uvicorn.error")
    body = json.dumps({"env": os.environ.get("DROPIN_VALUE"), "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class Asgi2App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await app(self.scope, receive, send)


def sync_front(scope, receive, send):
    # ASGI 3, but a plain function returning the coroutine: "auto" takes it for ASGI 2.
    return app(scope, receive, send)
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "dropin.py").write_text(APP)
    (tmp_path / "raises_on_import.py").write_text(
        "import os\n\nsettings = os.environ['A_SETTING_THAT_IS_NOT_SET']\n"
    )
    return tmp_path


@pytest.fixture
def start() -> Iterator[object]:
    servers: list[Server] = []

    def _start(
        *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, script: bool = False
    ) -> Server:
        command = [sys.executable, *args] if script else [*TRIOSERVE, *args]
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        server = Server(proc)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop(signal.SIGKILL)


def stdout_of(server: Server) -> str:
    """What the stopped server wrote to stdout (Server.stop appends it to its output)."""
    return server.text


# --- item 8: trioserve.run stays the function ------------------------------------------------

SCRIPT = """
import trioserve

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"from main"}})

# No __main__ guard, as docs/workers.md allows: the worker imports this module again.
trioserve.run("main:app", port=0, {options})
"""


@pytest.mark.parametrize("options", ["workers=1", "workers=2"])
def test_script_calling_trioserve_run_without_main_guard(
    start: object, tmp_path: Path, options: str
) -> None:
    (tmp_path / "main.py").write_text(SCRIPT.format(options=options))
    server = start("main.py", cwd=tmp_path, script=True)  # type: ignore[operator]
    [url] = server.wait_ready(timeout=20)
    response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 200
    assert response.text == "from main"
    assert server.stop(signal.SIGTERM, timeout=20) == 0
    assert "not callable" not in server.text


def test_import_trioserve_run_keeps_the_function() -> None:
    code = (
        "import trioserve.run, trioserve, trioserve._runner as r\n"
        "from trioserve.run import make_config, EXIT_USAGE\n"
        "assert trioserve.run is r.run, trioserve.run\n"
        "from trioserve import run\n"
        "assert run is r.run\n"
        "assert callable(make_config) and EXIT_USAGE == 2\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


# --- item 9: import errors inside the app log their traceback ------------------------------


def test_error_inside_the_app_import_logs_its_traceback(app_dir: Path) -> None:
    result = run_cli("raises_on_import:app", cwd=app_dir)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raises_on_import.py", line 3' in result.stderr
    assert "KeyError: 'A_SETTING_THAT_IS_NOT_SET'" in result.stderr
    # A module that is not there is one line, no traceback.
    result = run_cli("no_such_module_here:app", cwd=app_dir)
    assert result.returncode == 1
    assert "Could not import module" in result.stderr
    assert "Traceback" not in result.stderr


# --- item 11: logging ------------------------------------------------------------------------


def test_default_logs_access_to_stdout_and_shows_uvicorn_error(
    start: object, app_dir: Path
) -> None:
    server = start("dropin:app", "--port", "0", cwd=app_dir)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url + "/logged", timeout=10).status_code == 200
    server.read_until("app says hello via uvicorn.error")  # stderr, trioserve's format
    assert server.stop() == 0
    errors = "".join(server.output)
    assert "[INFO] app says hello via uvicorn.error" in errors
    # Stopping appended stdout after stderr: the access line is there, and only once.
    assert errors.count('"GET /logged HTTP/1.1" 200') == 1
    assert server.proc.stdout is not None


def test_access_log_goes_to_stdout_not_stderr(app_dir: Path) -> None:
    proc = subprocess.Popen(
        [*TRIOSERVE, "dropin:app", "--port", "0"],
        cwd=app_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(proc)
    try:
        [url] = server.wait_ready()
        assert httpx.get(url + "/where", timeout=10).status_code == 200
        server.read_until("app says hello")
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert '"GET /where HTTP/1.1" 200' in out.decode()
    assert "GET /where" not in "".join(server.output) + err.decode()


def test_uvicorn_log_config_drives_trioserve_logs(start: object, app_dir: Path) -> None:
    uvicorn_config = pytest.importorskip("uvicorn.config")
    path = app_dir / "uvicorn-logging.json"
    path.write_text(json.dumps(uvicorn_config.LOGGING_CONFIG))  # Uvicorn's own, verbatim
    server = start(  # type: ignore[operator]
        "dropin:app", "--port", "0", "--log-config", str(path), cwd=app_dir
    )
    [url] = server.wait_ready()
    assert httpx.get(url + "/via-uvicorn?x=1", timeout=10).status_code == 200
    server.read_until("app says hello")
    assert server.stop() == 0
    text = server.text
    # uvicorn.logging.DefaultFormatter: "INFO:     message"
    assert "INFO:     Running on http://127.0.0.1:" in text
    assert "INFO:     app says hello via uvicorn.error" in text
    # uvicorn.logging.AccessFormatter, fed Uvicorn's own five arguments.
    assert '- "GET /via-uvicorn?x=1 HTTP/1.1" 200' in text
    assert "INFO:     127.0.0.1:" in text
    assert "Logging error" not in text


RUN_SCRIPT = """
import trioserve
from dropin import app

trioserve.run(
    app,
    port=0,
    log_level={level!r},
    log_config={{
        "version": 1,
        "formatters": {{"plain": {{"format": "LOGGED %(name)s %(levelname)s %(message)s"}}}},
        "handlers": {{"err": {{"class": "logging.StreamHandler", "formatter": "plain",
                               "stream": "ext://sys.stderr"}}}},
        "loggers": {{
            "uvicorn.error": {{"handlers": ["err"], "level": "DEBUG", "propagate": False}},
            "uvicorn.access": {{"handlers": ["err"], "level": "INFO", "propagate": False}},
        }},
    }},
)
"""


def test_run_takes_log_config_dict_and_int_log_level(start: object, app_dir: Path) -> None:
    (app_dir / "serve_it.py").write_text(RUN_SCRIPT.format(level=10))
    server = start("serve_it.py", cwd=app_dir, script=True)  # type: ignore[operator]
    match = server.read_until(r"LOGGED uvicorn.error INFO Running on (http://\S+)")
    url = match.group(1)
    assert httpx.get(url + "/d", timeout=10).status_code == 200
    server.read_until('LOGGED uvicorn.access INFO 127.0.0.1:[0-9]+ - "GET /d HTTP/1.1" 200')
    assert server.stop() == 0


def test_log_level_trace_logs_asgi_messages(start: object, app_dir: Path) -> None:
    server = start("dropin:app", "--port", "0", "--log-level", "trace", cwd=app_dir)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url + "/traced", timeout=10).status_code == 200
    server.read_until(r"\[TRACE\] ASGI \[\d+\] Started scope=\{'type': 'http'")
    server.read_until(r"ASGI \[\d+\] Send \{'type': 'http.response.start', 'status': 200")
    server.read_until(r"ASGI \[\d+\] Send \{'type': 'http.response.body', 'body': '<\d+ bytes>'")
    server.read_until(r"ASGI \[\d+\] Completed")
    assert server.stop() == 0
    # At debug nothing is traced.
    server = start("dropin:app", "--port", "0", "--log-level", "debug", cwd=app_dir)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url + "/quiet", timeout=10).status_code == 200
    server.read_until("app says hello")
    assert server.stop() == 0
    assert "ASGI [" not in server.text


# --- item 12: Uvicorn flags wired end to end -------------------------------------------------


def test_env_file(start: object, app_dir: Path) -> None:
    (app_dir / ".env").write_text(
        "# settings\nexport DROPIN_VALUE='from the file'\nOTHER=1  # comment\n"
    )
    server = start("dropin:app", "--port", "0", "--env-file", ".env", cwd=app_dir)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url + "/", timeout=10).json()["env"] == "from the file"
    server.stop()
    # A variable already set wins over the file (python-dotenv's override=False).
    server = start(  # type: ignore[operator]
        "dropin:app",
        "--port",
        "0",
        "--env-file",
        ".env",
        cwd=app_dir,
        env={"DROPIN_VALUE": "from the environment"},
    )
    [url] = server.wait_ready()
    assert httpx.get(url + "/", timeout=10).json()["env"] == "from the environment"
    server.stop()
    result = run_cli("dropin:app", "--env-file", "missing.env", cwd=app_dir)
    assert result.returncode == 2
    assert "env_file missing.env" in result.stderr


@pytest.mark.parametrize(
    ("target", "interface"),
    [("Asgi2App", "asgi2"), ("Asgi2App", "auto"), ("sync_front", "asgi3"), ("app", "auto")],
)
def test_interface_flag(start: object, app_dir: Path, target: str, interface: str) -> None:
    server = start(  # type: ignore[operator]
        f"dropin:{target}", "--port", "0", "--interface", interface, cwd=app_dir
    )
    [url] = server.wait_ready()
    assert httpx.get(url + "/i", timeout=10).json()["path"] == "/i"
    assert server.stop() == 0


def test_interface_wsgi_says_why_and_what_to_use(app_dir: Path) -> None:
    result = run_cli("dropin:app", "--interface", "wsgi", cwd=app_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ASGI apps only" in lines[0] and "a2wsgi" in lines[0]


def test_uvicorn_flags_all_start_a_server(start: object, app_dir: Path) -> None:
    server = start(  # type: ignore[operator]
        "dropin:app",
        "--port",
        "0",
        "--ws-max-queue",
        "8",
        "--ws-per-message-deflate",
        "false",
        "--limit-max-requests-jitter",
        "3",
        "--timeout-worker-healthcheck",
        "7",
        "--h11-max-incomplete-event-size",
        "2048",
        "--no-server-header",
        "--no-date-header",
        "--header",
        "X-Extra: yes",
        "--interface",
        "auto",
        "--ws",
        "websockets",
        cwd=app_dir,
    )
    [url] = server.wait_ready()
    response = httpx.get(url + "/", timeout=10)
    assert response.status_code == 200
    assert "server" not in response.headers and "date" not in response.headers
    assert response.headers["x-extra"] == "yes"
    # --h11-max-incomplete-event-size reached the parser: a 4 KiB head gets 431.
    big = httpx.get(url + "/", headers={"x-big": "a" * 4096}, timeout=10)
    assert big.status_code == 431
    # --ws-per-message-deflate false: a client's permessage-deflate offer is declined.
    assert ws_extensions(url) is None
    assert server.stop() == 0
    server = start("dropin:app", "--port", "0", "--ws-per-message-deflate", "true", cwd=app_dir)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert (ws_extensions(url) or "").startswith("permessage-deflate")
    assert server.stop() == 0


def ws_extensions(url: str) -> str | None:
    from websockets.sync.client import connect

    with connect("ws" + url[4:] + "/ws", compression="deflate", open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        assert ws.response is not None
        value: str | None = ws.response.headers.get("Sec-WebSocket-Extensions")
        return value


def test_header_without_colon_is_one_line(app_dir: Path) -> None:
    result = run_cli("dropin:app", "--header", "nocolon", cwd=app_dir)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "NAME:VALUE" in result.stderr


def test_kubernetes_service_variables_do_not_stop_start_up(start: object, app_dir: Path) -> None:
    env = {
        "TRIOSERVE_SERVICE_HOST": "10.96.0.12",
        "TRIOSERVE_PORT": "tcp://10.96.0.12:8000",
        "TRIOSERVE_PORT_8000_TCP_ADDR": "10.96.0.12",
    }
    server = start("dropin:app", "--port", "0", cwd=app_dir, env=env)  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url + "/", timeout=10).status_code == 200
    assert server.stop() == 0
    assert "TRIOSERVE_PORT='tcp://10.96.0.12:8000' (not a number)" in server.text
    assert "TRIOSERVE_SERVICE_HOST (a Kubernetes service variable?)" in server.text


def test_trioserve_port_from_the_environment(start: object, app_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = start("dropin:app", cwd=app_dir, env={"TRIOSERVE_PORT": str(port)})  # type: ignore[operator]
    [url] = server.wait_ready()
    assert url == f"http://127.0.0.1:{port}"
    assert httpx.get(url + "/", timeout=10).status_code == 200
    assert server.stop() == 0


# --- item 13: unix sockets -------------------------------------------------------------------


def curl_unix(path: str) -> subprocess.CompletedProcess[str]:
    curl = require_program("curl", package="curl")
    return subprocess.run(
        [curl, "-sS", "--max-time", "10", "--unix-socket", path, "http://localhost/u"],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp_path is 0700): the socket's mode decides."""
    path = Path(tempfile.mkdtemp(prefix="trioserve-uds-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@requires_program("curl", package="curl")
def test_unix_socket_mode_0666_and_removed_on_exit(
    start: object, app_dir: Path, open_dir: Path
) -> None:
    sock = str(open_dir / "app.sock")
    server = start("dropin:app", "--uds", sock, cwd=app_dir)  # type: ignore[operator]
    server.read_until("Running on http[+]unix://")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
    assert json.loads(curl_unix(sock).stdout)["path"] == "/u"
    assert server.stop() == 0
    assert not os.path.exists(sock)


@requires_program("curl", package="curl")
def test_umask_flag_restricts_the_socket(start: object, app_dir: Path, open_dir: Path) -> None:
    sock = str(open_dir / "app.sock")
    server = start("dropin:app", "--uds", sock, "--umask", "077", cwd=app_dir)  # type: ignore[operator]
    server.read_until("Running on http[+]unix://")
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o700
    assert json.loads(curl_unix(sock).stdout)["path"] == "/u"
    assert server.stop() == 0
    assert not os.path.exists(sock)


@requires_program("curl", package="curl")
def test_unix_socket_with_workers_removed_on_exit(
    start: object, app_dir: Path, open_dir: Path
) -> None:
    sock = str(open_dir / "app.sock")
    server = start("dropin:app", "--uds", sock, "--workers", "2", cwd=app_dir)  # type: ignore[operator]
    server.read_until("Running on", timeout=20)
    server.read_until(r"Worker .*ready|Booted|ready", timeout=20)
    assert json.loads(curl_unix(sock).stdout)["path"] == "/u"
    assert server.stop(timeout=20) == 0
    assert not os.path.exists(sock)


NGINX_UNIX_CONF = """
worker_processes 1;
daemon off;
user nobody nogroup;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://unix:{sock}:; }}
    }}
}}
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx as another user needs root (as in CI)")
@requires_program("nginx", package="nginx")
@pytest.mark.parametrize(("umask", "status"), [(None, 200), ("077", 502)])
def test_nginx_as_another_user_reaches_the_socket(
    start: object, app_dir: Path, open_dir: Path, umask: str | None, status: int
) -> None:
    nginx = require_program("nginx", package="nginx")
    sock = str(open_dir / "app.sock")
    extra = ["--umask", umask] if umask else []
    server = start("dropin:app", "--uds", sock, *extra, cwd=app_dir)  # type: ignore[operator]
    server.read_until("Running on http[+]unix://")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = open_dir / "nginx.conf"
    conf.write_text(NGINX_UNIX_CONF.format(tmp=open_dir, port=port, sock=sock))
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(open_dir), "-e", str(open_dir / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/u", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert response.status_code == status
        if status == 200:
            assert response.json()["path"] == "/u"
        else:
            assert "Permission denied" in (open_dir / "nginx-error.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert server.stop() == 0


# --- every Uvicorn flag and keyword ----------------------------------------------------------

# Uvicorn options trioserve does not take, each with the reason. Anything else Uvicorn has
# must be accepted (a new Uvicorn release adding a flag makes this test name it).
NOT_TAKEN = {
    "http2": "no switch needed: HTTP/2 is always served (ALPN, h2c prior knowledge, Upgrade)",
    "timeout_notify": "gunicorn's UvicornWorker protocol; workers report by heartbeat here",
    "callback_notify": "as timeout_notify",
    "ssl_context_factory": "a Python callable: not a setting a file or flag can carry",
}


def uvicorn_command() -> Any:
    pytest.importorskip("uvicorn")
    import uvicorn.main  # noqa: F401 (the attribute is the click command, the module is here)

    return sys.modules["uvicorn.main"].main


def test_every_uvicorn_flag_is_accepted() -> None:
    from trioserve import cli

    ours = set(cli.build_parser()._option_string_actions)
    missing = []
    for param in uvicorn_command().params:
        for flag in [*param.opts, *param.secondary_opts]:
            name = flag.lstrip("-").replace("-", "_")
            if flag.startswith("--") and flag not in ours and name not in NOT_TAKEN:
                missing.append(flag)
    assert not missing


def test_every_uvicorn_run_keyword_is_accepted() -> None:
    import inspect

    from trioserve.config import canonical_key

    uvicorn = pytest.importorskip("uvicorn")
    folded = {"host", "port", "uds", "fd"}  # into bind
    missing = []
    for name in inspect.signature(uvicorn.Config.__init__).parameters:
        if name in {"self", "app"} | folded | set(NOT_TAKEN):
            continue
        try:
            canonical_key(name, source="test")
        except Exception:
            missing.append(name)
    assert not missing


def test_ws_implementation_names_are_one_implementation(app_dir: Path) -> None:
    result = run_cli("dropin:app", "--ws", "none", cwd=app_dir)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot be turned off" in result.stderr
