"""What every benchmark run needs: servers started pinned and stopped by process group, the
CPU time every process used during a run, and the statistics the reports print.

A server is started in its own session (so its process group holds it and any workers it
forks), pinned with ``taskset`` to the server core, and stopped by signalling that group:
nothing is ever stopped by name. CPU time is read from ``/proc/PID/stat`` before and after a
run, for the server's group and for everything else, so a run disturbed by another process
on this shared machine is seen (``other_pct``) and can be retried.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
VERSION_PACKAGES = [
    "trioserve", "hypercorn", "uvicorn", "granian", "httptools", "uvloop", "trio", "h11",
    "wsproto", "websockets", "fastapi", "starlette", "anyio",
]  # fmt: skip


@dataclass
class ServerSpec:
    name: str
    template: str  # a command with {port}, {python}, {bin}, {here}
    scenarios: tuple[str, ...] | None = None  # None: every scenario


@dataclass
class Placeholders:
    """The values a server command template may use besides ``{port}``."""

    python: str = sys.executable
    here: str = str(HERE)

    def expand(self, template: str, port: int | str) -> str:
        bindir = str(Path(self.python).parent)
        return template.format(port=port, python=self.python, bin=bindir, here=self.here)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    """``argv`` run on ``cpu`` when taskset exists and a CPU is asked for."""
    if cpu in (None, "", "none") or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


@dataclass
class ServerProcess:
    name: str
    command: str
    port: int
    cpu: str | None
    cwd: str
    log_path: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pgid: int = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [self.cwd, _pypath()]))}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                pinned(self.cpu, shlex.split(self.command)),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a group
            )
        self.pgid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen in {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None:
            return
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            self.proc.poll()  # reap the leader, or it stays a zombie in the group
            time.sleep(0.05)
        if _group_alive(self.pgid):
            _signal_group(self.pgid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _pypath() -> str:
    return os.environ.get("PYTHONPATH", "")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    return any(group == pgid and not zombie for group, _, zombie in proc_times().values())


def proc_times() -> dict[int, tuple[int, int, bool]]:
    """pid -> (process group, user+system clock ticks, is a zombie) for every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) "
        out[int(entry.name)] = (
            int(fields[2]),
            int(fields[11]) + int(fields[12]),
            fields[0] == b"Z",
        )
    return out


def cpu_seconds(
    before: dict[int, tuple[int, int, bool]],
    after: dict[int, tuple[int, int, bool]],
    groups: set[int],
    *,
    inside: bool,
) -> float:
    """CPU seconds used between the snapshots by processes in ``groups`` (or outside them)."""
    ticks = 0
    for pid, (group, used, _) in after.items():
        if (group in groups) == inside:
            ticks += used - before.get(pid, (group, 0, False))[1]
    return ticks / TICK


def machine_busy_pct(sample: float = 0.5) -> float:
    """How busy the whole machine is, in % of all its cores, over ``sample`` seconds."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = read()
    time.sleep(sample)
    busy1, total1 = read()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait until the machine is below ``threshold`` % busy (at most ``max_wait`` s)."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy_pct()
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy_pct()
    return busy


def is_noisy(record: dict[str, Any], max_other: float) -> bool:
    return bool(record.get("other_pct") is not None and record["other_pct"] > max_other)


def summarize(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None, "spread": None}
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else None
    return {"median": median, "min": min(values), "max": max(values), "spread": spread}


def round_ratios(
    runs: list[dict[str, Any]], name: str, baseline: str, key: str
) -> dict[str, float | None]:
    """Median (min, max) over rounds of name/baseline, each taken within one round."""
    by_round: dict[tuple[Any, Any], dict[str, float]] = {}
    for run in runs:
        if run.get("error") or not run.get(key) or run.get("discarded"):
            continue
        slot = by_round.setdefault((run.get("round"), run.get("conns")), {})
        slot[run["server"]] = run[key]
    ratios = [s[name] / s[baseline] for s in by_round.values() if name in s and baseline in s]
    return summarize(ratios)


def fmt_ratio(stats: dict[str, Any]) -> str:
    if stats.get("median") is None:
        return "-"
    if stats["min"] == stats["max"]:
        return f"{stats['median']:.2f}"
    return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def package_versions(python: str) -> dict[str, Any]:
    """Versions of the servers and libraries in ``python``'s environment, and the machine."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for n in {VERSION_PACKAGES!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    versions: dict[str, Any] = {}
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        versions.update(json.loads(done.stdout))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    versions["kernel"] = platform.release()
    versions["cpus"] = os.cpu_count()
    if shutil.which("wrk"):
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        versions["wrk"] = (done.stdout + done.stderr).split("\n")[0].strip()
    return versions


def sigterm_as_interrupt() -> None:
    """A SIGTERM to the runner unwinds like Ctrl-C, so every server it started is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
