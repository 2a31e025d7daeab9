"""The supervisor's pure parts, without processes: filters, watchers, policies, config."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

import pytest
import trio

from trioserve.config import Config
from trioserve.importer import Receive, Scope, Send
from trioserve.run import make_config, pid_file
from trioserve.server.serve import serve
from trioserve.supervisor.policy import backoff_delay, describe_exit
from trioserve.supervisor.reload import (
    FileFilter,
    StatWatcher,
    Watcher,
    WatchfilesWatcher,
    make_watcher,
)


def test_web_concurrency_sets_workers_unless_given() -> None:
    assert make_config("main:app", environ={"WEB_CONCURRENCY": "3"}).workers == 3
    assert make_config("main:app", environ={"WEB_CONCURRENCY": "3"}, workers=2).workers == 2
    assert make_config("main:app", environ={}).workers == 1


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(8)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 10.0
    assert delays == sorted(delays)


def test_exit_descriptions() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_pid_file_written_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    with pid_file(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()
    with pid_file(None):
        pass


def test_file_filter_defaults(tmp_path: Path) -> None:
    f = FileFilter([str(tmp_path)])
    assert f(tmp_path / "main.py")
    assert f(tmp_path / "pkg" / "mod.py")
    assert not f(tmp_path / "main.pyc")
    assert not f(tmp_path / "notes.txt")
    assert not f(tmp_path / ".venv" / "lib" / "site.py")
    assert not f(tmp_path / "pkg" / "__pycache__" / "mod.py")
    assert not f(tmp_path / ".main.py.swp")
    assert not f("/elsewhere/main.py")


def test_file_filter_user_patterns(tmp_path: Path) -> None:
    f = FileFilter(
        [str(tmp_path)], includes=["*.html", "templates/*.txt", ".*"], excludes=["tests"]
    )
    assert f(tmp_path / "index.html")
    assert f(tmp_path / "templates" / "a.txt")
    assert not f(tmp_path / "b.txt")
    assert f(tmp_path / ".env.py")  # including ".*" lifts the default exclude
    assert not f(tmp_path / "tests" / "test_x.py")


def _wait_readable(watcher: Watcher, timeout: float) -> bool:
    readable, _, _ = select.select([watcher.fileno()], [], [], timeout)
    return bool(readable)


@pytest.mark.parametrize("kind", ["stat", "watchfiles"])
def test_watcher_reports_a_change(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "main.py"
    target.write_text("a = 1\n")
    (tmp_path / "ignored.txt").write_text("x")
    config = Config(reload_dirs=[str(tmp_path)], reload_delay=0.05)
    watcher = make_watcher(config, prefer_watchfiles=kind == "watchfiles")
    assert isinstance(watcher, StatWatcher if kind == "stat" else WatchfilesWatcher)
    watcher.start()
    try:
        time.sleep(0.2)  # let the OS watch be established before the edit
        (tmp_path / "ignored.txt").write_text("y")
        target.write_text("a = 2  # longer\n")
        assert _wait_readable(watcher, 3)
        assert watcher.take_changes() == [str(target.resolve())]
        assert not _wait_readable(watcher, 0.3)
    finally:
        watcher.close()


def test_stat_watcher_sees_added_and_removed_files(tmp_path: Path) -> None:
    watcher = StatWatcher(FileFilter([str(tmp_path)]), interval=1)
    (tmp_path / "new.py").write_text("")
    assert watcher.poll() == [str(tmp_path.resolve() / "new.py")]
    assert watcher.poll() == []
    (tmp_path / "new.py").unlink()
    assert watcher.poll() == [str(tmp_path.resolve() / "new.py")]
    watcher.close()


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_single_process_max_requests_shuts_down_gracefully() -> None:
    config = Config(bind=["127.0.0.1:0"], max_requests=2, lifespan="off")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(serve, _ok_app, config)
            port = int(urls[0].rsplit(":", 1)[1])
            for _ in range(2):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200")
                await stream.aclose()
        # serve() returned by itself after the second request
