"""``trioserve.run()`` (blocking, like ``uvicorn.run``) in subprocesses, and ``serve()``."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import trio

import trioserve
from examples.hello import app as hello_app
from trioserve.run import make_config

ROOT = Path(__file__).resolve().parent.parent.parent


def run_script(code: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve_script(code: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 10
    while b"Running on " not in seen:
        assert time.monotonic() < deadline
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    return proc, seen.split(b"Running on ")[1].split()[0].decode()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_run_with_an_app_object_and_port_zero() -> None:
    proc, url = serve_script(
        """
        import trioserve
        from examples.hello import app
        trioserve.run(app, host="127.0.0.1", port=0, access_log=False)
        """
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url).text == "Hello, world!\n"
    finally:
        assert stop(proc) == 0


def test_run_with_an_import_string_and_sigterm() -> None:
    proc, url = serve_script(
        """
        import trioserve
        trioserve.run("examples.hello:app", host="127.0.0.1", port=0, graceful_timeout=1)
        """
    )
    try:
        assert httpx.get(url).status_code == 200
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def test_run_exit_codes() -> None:
    missing = run_script(
        """
        import trioserve
        trioserve.run("no_such_module_for_run:app", port=0)
        """
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert "not found" in missing.stderr

    bad_option = run_script(
        """
        import trioserve
        trioserve.run("examples.hello:app", port=0, no_such_option=1)
        """
    )
    assert bad_option.returncode == 2
    assert "no_such_option" in bad_option.stderr

    startup_fails = run_script(
        """
        import trioserve

        async def app(scope, receive, send):
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "nope"})

        trioserve.run(app, port=0)
        """
    )
    assert startup_fails.returncode == 3
    assert "nope" in startup_fails.stderr
    assert "Traceback" not in startup_fails.stderr


async def test_serve_with_nursery_start_on_ipv4_and_ipv6() -> None:
    config = make_config(environ={}, bind=["127.0.0.1:0", "[::1]:0"])
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(trioserve.serve, hello_app, config)
        assert urls[0].startswith("http://127.0.0.1:")
        assert urls[1].startswith("http://[::1]:")
        async with httpx.AsyncClient() as client:
            for url in urls:
                response = await client.get(url)
                assert response.text == "Hello, world!\n"
        nursery.cancel_scope.cancel()
