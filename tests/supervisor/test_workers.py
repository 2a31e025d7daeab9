"""--workers N end to end: real processes, loopback sockets, signals by PID."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from .conftest import StartServer
from .procs import RequestLoop, alive, wait_until


def test_two_workers_serve_from_two_pids_and_write_pid_file(
    start: StartServer, tmp_path: Path
) -> None:
    pid_path = tmp_path / "trioserve.pid"
    server = start("--pid", str(pid_path), env={"WEB_CONCURRENCY": "2"})
    server.wait_serving(workers=2)
    assert pid_path.read_text().strip() == str(server.proc.pid)
    workers = server.worker_pids()
    assert len(workers) == 2
    seen: set[int] = set()
    for _ in range(200):
        status, body = server.get()
        assert status == 200
        seen.add(int(body.split()[0]))
        if len(seen) == 2:
            break
    assert seen == workers
    # setproctitle is in the test extra: workers are named in ps
    for pid in workers:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().startswith(b"trioserve: worker [main:app]")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert not pid_path.exists()
    assert not any(alive(pid) for pid in workers)


def test_killed_worker_is_replaced_while_the_other_keeps_serving(start: StartServer) -> None:
    server = start("--workers", "2")
    server.wait_serving(workers=2)
    first = server.worker_pids()
    victim = min(first)
    (survivor,) = first - {victim}
    with RequestLoop(server) as loop:
        assert wait_until(lambda: len(loop.ok) >= 5, 5)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_until(lambda: bool(loop.pids() - first), 5)
        replaced_after = time.monotonic() - killed_at
        assert wait_until(lambda: survivor in {int(b.split()[0]) for b in loop.ok[-50:]}, 5)
    assert replaced_after < 2.0
    # only a request the victim had already accepted can be lost with it
    assert len(loop.failures) <= 1, loop.failures
    assert server.count(rf"Worker {victim} died \(killed by SIGKILL\); starting a new one") == 1
    assert alive(survivor)


def test_sighup_rolling_restart_drops_no_request(start: StartServer) -> None:
    server = start("--workers", "2")
    server.wait_serving(workers=2)
    old = server.worker_pids()
    with RequestLoop(server) as loop, RequestLoop(server, keep_alive=True) as kept:
        assert wait_until(lambda: len(loop.ok) >= 5 and len(kept.ok) >= 5, 5)
        server.signal(signal.SIGHUP)
        server.wait_for(r"Worker \d+ stopped \(exit code 0\)", n=2)
        new = server.worker_pids() - old
        assert len(new) == 2
        assert wait_until(lambda: loop.pids() & new == new, 5)
        served_before = len(loop.ok), len(kept.ok)
        assert wait_until(
            lambda: len(loop.ok) > served_before[0] + 5 and len(kept.ok) > served_before[1] + 5,
            5,
        )
    assert loop.failures == []
    # A draining worker closes its idle keep-alive connections; a request the client sent at
    # that very moment is refused unprocessed (the HTTP/1.1 keep-alive race: clients may
    # retry it). At most one per drained worker, and never an error status.
    assert len(kept.failures) <= 2, kept.failures
    assert all("ReadError" in f or "RemoteProtocolError" in f for f in kept.failures)
    assert len(loop.ok) > 20
    assert kept.pids() & new
    assert server.count("Received SIGHUP: rolling restart") == 1
    assert server.count(r"Worker \d+ ready; worker \d+ drains and stops") == 2
    assert not any(alive(pid) for pid in old)


def test_sigterm_lets_slow_requests_finish_and_exits_0(start: StartServer) -> None:
    server = start("--workers", "2", "--graceful-timeout", "5")
    server.wait_serving(workers=2)
    workers = server.worker_pids()
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            results.append(server.get("/slow"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    server.wait_for("slow request started", n=4)
    t0 = time.monotonic()
    # Like systemd's KillMode=control-group: the supervisor and every worker get SIGTERM;
    # like timeout(1), the supervisor gets it twice. All of it only ever drains.
    server.signal(signal.SIGTERM)
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    server.wait_for(r"Received SIGTERM: stopping 2 worker\(s\)")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(timeout=5)
    assert errors == []
    assert [status for status, _ in results] == [200] * 4
    assert elapsed < 5.0
    assert not any(alive(pid) for pid in workers)
    assert "cancelling" not in server.output.lower()
    assert server.count("Received SIGTERM again: still draining") == 1


def test_max_requests_recycles_workers_without_failures(start: StartServer) -> None:
    server = start("--workers", "2", "--max-requests", "10", "--max-requests-jitter", "3")
    server.wait_serving(workers=2)
    with RequestLoop(server) as loop:
        # a worker keeps serving past its limit until its replacement is ready
        assert wait_until(lambda: len(loop.pids()) >= 4, 15)
    assert loop.failures == []
    retired = [
        int(m.group(1))
        for m in server.wait_for(r"Worker (\d+) reached max_requests; starting its replacement", 2)
    ]
    for pid in retired:
        assert sum(1 for b in loop.ok if int(b.split()[0]) == pid) >= 10
    server.wait_for(r"Worker \d+ stopped \(exit code 0\)", n=2)


def test_hung_worker_is_killed_and_replaced(start: StartServer) -> None:
    server = start("--workers", "2", "--worker-timeout", "1")
    server.wait_serving(workers=2)
    first = server.worker_pids()
    hang = threading.Thread(target=lambda: _ignore_errors(server.get, "/hang", 10))
    hang.start()
    match = server.wait_for(r"Killing worker (\d+): no heartbeat", timeout=5)[0]
    hung = int(match.group(1))
    assert hung in first
    server.wait_for(r"Worker \d+ ready", n=3, timeout=5)
    hang.join(timeout=5)
    assert wait_until(lambda: not alive(hung), 2)
    seen = {int(server.get()[1].split()[0]) for _ in range(30)}
    assert hung not in seen


def test_ttin_adds_and_ttou_removes_a_worker(start: StartServer) -> None:
    server = start("--workers", "2")
    server.wait_serving(workers=2)
    server.signal(signal.SIGTTIN)
    server.wait_for(r"Received SIGTTIN: workers 2 -> 3")
    server.wait_for(r"Worker \d+ ready", n=3)
    server.signal(signal.SIGTTOU)
    server.wait_for(r"Received SIGTTOU: workers 3 -> 2")
    stopped = server.wait_for(r"Worker (\d+) stopped \(exit code 0\)")[0]
    assert not alive(int(stopped.group(1)))
    assert sum(alive(pid) for pid in server.worker_pids()) == 2
    assert server.get()[0] == 200


def test_app_that_cannot_import_makes_the_supervisor_give_up(start: StartServer) -> None:
    command = [sys.executable, "-m", "trioserve", "missing_module:app", "--workers", "2"]
    server = start(command=[*command, "--port", "0"])
    assert server.proc.wait(timeout=10) == 1
    assert "Could not import module 'missing_module': not found." in server.output
    assert server.count("no worker ever served; giving up") == 1
    assert not any(alive(pid) for pid in server.worker_pids())


def _ignore_errors(fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError:
        pass


def test_worker_failing_at_start_up_is_retried_with_back_off(
    start: StartServer, tmp_path: Path
) -> None:
    server = start("--workers", "2")
    server.wait_serving(workers=2)
    victim = min(server.worker_pids())
    (tmp_path / "fail-imports").touch()
    os.kill(victim, signal.SIGKILL)
    server.wait_for(r"1 start-up failure\(s\) in a row, next attempt in 0\.5s")
    server.wait_for(r"2 start-up failure\(s\) in a row, next attempt in 1\.0s")
    (tmp_path / "fail-imports").unlink()
    server.wait_for(r"Worker \d+ ready", n=3, timeout=5)
    # One error line per failed start (each followed by the app's traceback).
    assert server.count("Error importing module .*told to fail at import") == 2
    assert server.proc.poll() is None


def test_workers_stop_when_the_supervisor_is_killed(start: StartServer) -> None:
    server = start("--workers", "2")
    server.wait_serving(workers=2)
    workers = server.worker_pids()
    server.proc.kill()
    server.proc.wait(timeout=5)
    assert wait_until(lambda: not any(alive(pid) for pid in workers), 5)
    assert server.count("Supervisor is gone; shutting down") == 2


def test_second_sigint_cancels_requests_in_flight(start: StartServer) -> None:
    server = start("--workers", "2", "--graceful-timeout", "30")
    server.wait_serving(workers=2)
    client = threading.Thread(target=lambda: _ignore_errors(server.get, "/long", 20))
    client.start()
    server.wait_for("long request started")
    t0 = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait_for(r"Received SIGINT: stopping 2 worker\(s\)")
    server.signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    client.join(timeout=5)
    assert not client.is_alive()
    # the busy worker cut its request short (the idle one may have stopped already)
    assert server.count("Cancelling requests in flight") >= 1
