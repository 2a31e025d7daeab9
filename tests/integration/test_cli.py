"""The ``trioserve`` command in a subprocess: flags, config files, exit codes, signals."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
TRIOSERVE = [sys.executable, "-m", "trioserve"]
URL_LINE = re.compile(r"Running on (http://\S+) ")

PROBE_APP = """
import json, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            else:
                print("lifespan shutdown ran", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({
        "path": scope["path"],
        "root_path": scope["root_path"],
        "state": dict(scope.get("state", {})),
        "server": scope["server"],
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def make_app():
    return app


async def no_lifespan(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("http only")
    await app(scope, receive, send)


async def startup_fails(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await app(scope, receive, send)


not_callable = 42
"""


class Server:
    """A trioserve subprocess; stopped by its PID."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.output: list[str] = []
        self.urls: list[str] = []
        self._partial = ""

    def read_until(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output:
                if match := regex.search(line):
                    return match
            assert time.monotonic() < deadline, f"{pattern!r} not seen in:\n{self.text}"
            self.read_line(deadline - time.monotonic())

    def wait_ready(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The URLs of the first ``count`` 'Running on' lines."""
        deadline = time.monotonic() + timeout
        while True:
            urls = [m.group(1) for line in self.output if (m := URL_LINE.search(line))]
            if len(urls) >= count:
                self.urls = urls[:count]
                return self.urls
            assert time.monotonic() < deadline, self.text
            self.read_line(deadline - time.monotonic())

    def read_line(self, timeout: float) -> None:
        """Read what stderr has (unbuffered, so select() never misses a buffered line)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            if sel.select(timeout):
                data = os.read(fd, 65536)
                assert data, f"server exited: {self.text}"
                self._partial += data.decode(errors="replace")
                *lines, self._partial = self._partial.split("\n")
                self.output.extend(line + "\n" for line in lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stderr, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                rest = self._partial + pipe.read().decode(errors="replace")
                self._partial = ""
                self.output.extend(line + "\n" for line in rest.splitlines())
                pipe.close()
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe.py").write_text(PROBE_APP)
    (tmp_path / "broken_import.py").write_text("import json\nimport not_a_real_dependency_xyz\n")
    (tmp_path / "raises_on_import.py").write_text("raise ValueError('bad setting')\n")
    return tmp_path


@pytest.fixture
def start() -> Iterator[object]:
    servers: list[Server] = []

    def _start(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Server:
        proc = subprocess.Popen(
            [*TRIOSERVE, *args],
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


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIOSERVE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- serving -----------------------------------------------------------------------------


def test_port_zero_prints_real_url_and_serves(start: object) -> None:
    server = start("examples.hello:app", "--port", "0")  # type: ignore[operator]
    [url] = server.wait_ready()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert not url.endswith(":0")
    response = httpx.get(url + "/")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
    assert server.stop() == 0


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_http_flag_picks_the_parser(start: object, parser: str) -> None:
    server = start("examples.hello:app", "--port", "0", "--http", parser)  # type: ignore[operator]
    [url] = server.wait_ready()
    with httpx.Client() as client:  # keep-alive: two requests on one connection
        for _ in range(2):
            response = client.get(url + "/")
            assert response.status_code == 200
            assert response.text == "Hello, world!\n"
    assert server.stop() == 0
    assert f"HTTP/1.1 parser: {parser}" in server.text


def test_http_auto_names_its_choice(start: object) -> None:
    # The flag, not the default: the suite's h11 run sets TRIOSERVE_HTTP=h11 for children.
    server = start("examples.hello:app", "--port", "0", "--http", "auto")  # type: ignore[operator]
    server.wait_ready()
    assert server.stop() == 0
    assert "HTTP/1.1 parser: httptools" in server.text  # the test extra installs httptools


def test_console_script_entry_point_exists() -> None:
    script = Path(sys.executable).parent / "trioserve"
    assert script.exists()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0
    assert out.stdout.startswith("trioserve ")


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert re.match(r"trioserve \d+\.\d+", version.stdout)
    help_ = run_cli("--help")
    assert help_.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--bind",
        "--root-path",
        "--timeout-keep-alive",
        "--timeout-graceful-shutdown",
        "--lifespan",
        "--factory",
        "--app-dir",
        "--log-level",
        "--no-access-log",
        "--header",
        "--no-server-header",
        "--no-date-header",
        "--config",
    ):
        assert flag in help_.stdout, flag


def test_repeated_binds_including_ipv6(start: object) -> None:
    server = start(  # type: ignore[operator]
        "examples.hello:app", "-b", "127.0.0.1:0", "--bind", "[::1]:0"
    )
    urls = server.wait_ready(2)
    assert any(u.startswith("http://127.0.0.1:") for u in urls)
    assert any(u.startswith("http://[::1]:") for u in urls)
    for url in urls:
        assert httpx.get(url + "/").text == "Hello, world!\n"
    assert server.stop() == 0


def test_host_flag(start: object) -> None:
    server = start("examples.hello:app", "--host", "::1", "--port", "0")  # type: ignore[operator]
    [url] = server.wait_ready()
    assert url.startswith("http://[::1]:")
    assert httpx.get(url).status_code == 200
    server.stop()


def test_app_dir_root_path_factory_and_headers(start: object, app_dir: Path) -> None:
    server = start(  # type: ignore[operator]
        "probe:make_app",
        "--factory",
        "--app-dir",
        str(app_dir),
        "--port",
        "0",
        "--root-path",
        "/mount",
        "--header",
        "X-Env: test",
        "--header",
        "X-Other:2",
        "--no-server-header",
        "--no-date-header",
    )
    [url] = server.wait_ready()
    response = httpx.get(url + "/thing")
    body = response.json()
    assert body["root_path"] == "/mount"
    assert body["path"] == "/mount/thing"
    assert body["state"] == {"started": "yes"}
    assert response.headers["x-env"] == "test"
    assert response.headers["x-other"] == "2"
    assert "server" not in response.headers
    assert "date" not in response.headers
    server.stop()


def test_keep_alive_timeout_flag(start: object) -> None:
    server = start(  # type: ignore[operator]
        "examples.hello:app", "--port", "0", "--timeout-keep-alive", "0.3"
    )
    [url] = server.wait_ready()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        began = time.monotonic()
        while chunk := sock.recv(65536):
            data += chunk
        elapsed = time.monotonic() - began
    assert data.startswith(b"HTTP/1.1 200 ")
    assert elapsed < 3
    server.stop()


def test_access_log_on_and_off(start: object) -> None:
    on = start("examples.hello:app", "--port", "0")  # type: ignore[operator]
    [url] = on.wait_ready()
    httpx.get(url + "/logged?q=1", headers={"user-agent": "probe-agent"})
    on.stop()  # the access log is on stdout (as Uvicorn's), which stop() collects
    assert re.search(r'"GET /logged\?q=1 HTTP/1.1" 200 14 "-" "probe-agent"', on.text)

    off = start("examples.hello:app", "--port", "0", "--no-access-log")  # type: ignore[operator]
    [url] = off.wait_ready()
    httpx.get(url + "/unlogged")
    off.stop()
    assert "/unlogged" not in off.text


def test_log_level_warning_hides_info(start: object, tmp_path: Path) -> None:
    # No "Running on" line to read the port from, so a unix socket: no port race.
    path = str(tmp_path / "s.sock")
    server = start(  # type: ignore[operator]
        "examples.hello:app", "--uds", path, "--log-level", "warning"
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(path)
            except OSError:
                assert time.monotonic() < deadline, server.text
                time.sleep(0.05)
                continue
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
            break
    assert response.startswith(b"HTTP/1.1 200 ")
    assert server.stop() == 0
    assert "Running on" not in server.text
    assert "GET / HTTP/1.1" not in server.text


def test_log_level_debug_shows_more(start: object) -> None:
    server = start("examples.hello:app", "--port", "0", "--log-level", "debug")  # type: ignore[operator]
    server.wait_ready()
    assert server.stop() == 0
    assert "[INFO]" in server.text


def test_config_file_with_hypercorn_keys(start: object, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        textwrap.dedent(
            """
            bind = ["127.0.0.1:0"]
            root_path = "/r"
            keep_alive_timeout = 0.3
            graceful_timeout = 1.0
            include_server_header = false
            access_log_format = "ACCESS %(m)s %(U)s %(s)s"
            """
        )
    )
    (tmp_path / "probe.py").write_text(PROBE_APP)
    server = start("-c", str(config), "probe:app", "--app-dir", str(tmp_path))  # type: ignore[operator]
    [url] = server.wait_ready()
    response = httpx.get(url + "/x")
    assert response.json()["root_path"] == "/r"
    assert "server" not in response.headers
    assert server.stop() == 0
    assert "ACCESS GET /r/x 200" in server.text


def test_python_m_trioserve_and_sigint(start: object) -> None:
    server = start("examples.hello:app", "--port", "0")  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url).status_code == 200
    assert server.stop(signal.SIGINT) == 0


# -- lifespan ----------------------------------------------------------------------------


def test_lifespan_startup_failed_exits_3_with_one_line(app_dir: Path) -> None:
    out = run_cli("probe:startup_fails", "--app-dir", str(app_dir), "--port", "0")
    assert out.returncode == 3
    assert "database unreachable" in out.stderr
    assert "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "ERROR" in line]) == 1


def test_lifespan_on_requires_support(app_dir: Path) -> None:
    out = run_cli(
        "probe:no_lifespan", "--app-dir", str(app_dir), "--port", "0", "--lifespan", "on"
    )
    assert out.returncode == 3
    assert "lifespan" in out.stderr


def test_lifespan_off_skips_startup(start: object, app_dir: Path) -> None:
    server = start(  # type: ignore[operator]
        "probe:startup_fails", "--app-dir", str(app_dir), "--port", "0", "--lifespan", "off"
    )
    [url] = server.wait_ready()
    assert httpx.get(url).json()["state"] == {}
    assert server.stop() == 0


def test_lifespan_auto_tolerates_an_app_without_it(start: object, app_dir: Path) -> None:
    server = start("probe:no_lifespan", "--app-dir", str(app_dir), "--port", "0")  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url).status_code == 200
    assert server.stop() == 0


def test_sigterm_runs_lifespan_shutdown_and_exits_0(start: object, app_dir: Path) -> None:
    server = start("probe:app", "--app-dir", str(app_dir), "--port", "0")  # type: ignore[operator]
    [url] = server.wait_ready()
    assert httpx.get(url).json()["state"] == {"started": "yes"}
    assert server.stop(signal.SIGTERM) == 0
    assert "lifespan shutdown ran" in server.text


# -- bad app paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no_such_module_abc:app", r"Could not import module 'no_such_module_abc': not found"),
        ("probe:missing", r"Attribute 'missing' not found in module 'probe'"),
        ("probe:not_callable", r"not callable"),
        ("probe", r"must be in format"),
    ],
)
def test_bad_app_path_one_clear_line(app_dir: Path, target: str, expected: str) -> None:
    out = run_cli(target, "--app-dir", str(app_dir), "--port", "0")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert re.search(expected, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("target", "expected", "last"),
    [
        (
            "broken_import:app",
            r"Error importing module 'broken_import'.*not_a_real_dependency",
            "ModuleNotFoundError: No module named 'not_a_real_dependency_xyz'",
        ),
        (
            "raises_on_import:app",
            r"Error importing module 'raises_on_import'.*bad setting",
            "ValueError: bad setting",
        ),
    ],
)
def test_error_inside_the_app_one_line_then_its_traceback(
    app_dir: Path, target: str, expected: str, last: str
) -> None:
    """An exception from the app's own code gets its traceback too, as Uvicorn logs it."""
    out = run_cli(target, "--app-dir", str(app_dir), "--port", "0")
    assert out.returncode == 1, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert re.search(expected, lines[0]), lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert f"{target.split(':')[0]}.py" in out.stderr
    assert lines[-1] == last


def test_no_app_is_a_usage_error() -> None:
    out = run_cli()
    assert out.returncode == 2
    assert "no app given" in out.stderr


# -- Python API --------------------------------------------------------------------------


def test_trioserve_run_in_a_subprocess(app_dir: Path) -> None:
    port = free_port()
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(app_dir)!r})
        import trioserve
        trioserve.run("probe:app", host="127.0.0.1", port={port}, root_path="/api")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    server = Server(proc)
    try:
        [url] = server.wait_ready()
        assert url == f"http://127.0.0.1:{port}"
        body = httpx.get(url + "/x").json()
        assert body["root_path"] == "/api"
        assert json.dumps(body["state"]) == '{"started": "yes"}'
        assert server.stop(signal.SIGINT) == 0
    finally:
        server.stop(signal.SIGKILL)


CONTEXT_APP = """
import contextvars, json

region = contextvars.ContextVar("region", default="unset")
region.set("eu")  # at import: part of the context every connection starts from
user = contextvars.ContextVar("user", default="anonymous")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = {"region": region.get(), "user": user.get()}
    user.set("alice")  # leaked on purpose
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize("flag", [None, "--reset-contextvars"])
def test_reset_contextvars_flag(tmp_path: Path, start: Any, flag: str | None) -> None:
    """Each request on one connection starts fresh; with Uvicorn's --reset-contextvars it
    starts empty, so not even what the app module set at import is there."""
    (tmp_path / "ctxapp.py").write_text(CONTEXT_APP)
    args = ["ctxapp:app", "--port", "0", "--app-dir", str(tmp_path)]
    server = start(*args, *([flag] if flag else []))
    [url] = server.wait_ready()
    with httpx.Client() as client:  # one keep-alive connection
        seen = [client.get(url).json() for _ in range(3)]
    server.stop()
    region = "unset" if flag else "eu"
    assert seen == [{"region": region, "user": "anonymous"}] * 3
