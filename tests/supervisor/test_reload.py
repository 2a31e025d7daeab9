"""--reload end to end: edit the app file, break it, fix it; trioserve.run(reload=True)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from .conftest import StartServer
from .procs import Server, alive, app_source, wait_until


def _serves(server: Server, version: str, timeout: float = 2.0) -> float:
    """Seconds until responses carry ``version`` (fails after ``timeout``)."""
    t0 = time.monotonic()

    def check() -> bool:
        status, body = server.get()
        assert status == 200
        return body.endswith(" " + version)

    assert wait_until(check, timeout, step=0.02), server.output
    return time.monotonic() - t0


def test_edit_reloads_and_a_syntax_error_keeps_the_old_code_serving(
    start: StartServer, tmp_path: Path
) -> None:
    app = tmp_path / "main.py"
    server = start("--reload", "--reload-dir", str(tmp_path))
    server.wait_serving()
    assert server.get()[1].endswith(" v1")

    app.write_text(app_source("v2"))
    assert _serves(server, "v2") < 2.0
    server.wait_for(r"Detected changes in .*main\.py; reloading")

    app.write_text(app_source("v2") + "\ndef broken(:\n")
    server.wait_for(r"Reload failed: the new worker \d+ exited before serving", timeout=5)
    assert "SyntaxError" in server.output
    assert server.proc.poll() is None
    assert server.get()[1].endswith(" v2")  # the previous code still serves

    app.write_text(app_source("v3"))
    assert _serves(server, "v3") < 2.0

    workers = server.worker_pids()
    assert len(workers) == 4  # v1, v2, broken, v3
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert not any(alive(pid) for pid in workers)
    assert "address already in use" not in server.output.lower()


def test_app_broken_at_start_waits_for_a_fix(start: StartServer, tmp_path: Path) -> None:
    app = tmp_path / "main.py"
    app.write_text("def broken(:\n")
    server = start("--reload", "--reload-dir", str(tmp_path))
    server.wait_for("waiting for file changes to retry")
    assert "SyntaxError" in server.output
    assert server.proc.poll() is None
    app.write_text(app_source("fixed"))
    server.wait_serving()
    assert server.get()[1].endswith(" fixed")


def test_reload_exclude_and_include_patterns(start: StartServer, tmp_path: Path) -> None:
    server = start(
        "--reload",
        "--reload-dir",
        str(tmp_path),
        "--reload-include",
        "*.toml",
        "--reload-exclude",
        "scratch_*.py",
    )
    server.wait_serving()
    (tmp_path / "scratch_notes.py").write_text("x = 1\n")
    (tmp_path / "settings.toml").write_text("a = 1\n")
    server.wait_for(r"Detected changes in .*settings\.toml; reloading")
    server.wait_for(r"Worker \d+ ready; worker \d+ drains and stops")
    assert "scratch_notes" not in server.output


def test_run_with_reload_from_python_needs_no_main_guard(
    start: StartServer, tmp_path: Path
) -> None:
    (tmp_path / "serve.py").write_text(
        "import trioserve\n"
        f"trioserve.run('main:app', port=0, reload=True, reload_dirs=[{str(tmp_path)!r}],"
        " access_log=False)\n"
    )
    server = start(command=[sys.executable, "serve.py"])
    server.wait_serving()
    assert server.get()[1].endswith(" v1")
    (tmp_path / "main.py").write_text(app_source("v2"))
    assert _serves(server, "v2") < 2.0
    server.signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0


def test_run_with_reload_refuses_an_app_object(start: StartServer, tmp_path: Path) -> None:
    (tmp_path / "serve.py").write_text(
        "import trioserve\nfrom main import app\ntrioserve.run(app, port=0, reload=True)\n"
    )
    server = start(command=[sys.executable, "serve.py"])
    assert server.proc.wait(timeout=10) == 1
    assert "need the app as an import string, e.g. run('main:app', ...)" in server.output


def test_without_watchfiles_reload_polls(start: StartServer, tmp_path: Path) -> None:
    shim = tmp_path / ".shim" / "watchfiles"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    server = start(
        "--reload",
        "--reload-dir",
        str(tmp_path),
        "--reload-delay",
        "0.1",
        env={"PYTHONPATH": str(shim.parent)},
    )
    server.wait_serving()
    server.wait_for(r"watchfiles is not installed .*checking files every 0\.1s")
    (tmp_path / "main.py").write_text(app_source("polled"))
    assert _serves(server, "polled") < 2.0
