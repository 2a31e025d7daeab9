"""One measured run: a server started anew, the load generator against it, the record.

HTTP load comes from wrk (Debian package ``wrk``) when it is installed, else from
``pyload.py``, which speaks wrk's command line and output. WebSocket load comes from
``ws_client.py``. The load generator is pinned to the client core, the server to the server
core, and the CPU time of both and of everything else on the machine is recorded.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
Check = Callable[[int, bytes], "str | None"]


def _ok(status: int, body: bytes) -> str | None:
    return None if status == 200 else f"got {status} {body[:60]!r}"


def _ok_json(status: int, body: bytes) -> str | None:
    return None if status == 200 and body.startswith(b'{"message"') else _ok(0, body)


# scenario: (path, extra wrk arguments, check of one response)
SCENARIOS: dict[str, tuple[str, list[str], Check]] = {
    "hello": ("/", [], _ok),
    "close": ("/", ["-H", "Connection: close"], _ok),
    "big": (
        "/big",
        [],
        lambda st, body: _ok(st, body) or (None if len(body) == 1 << 20 else "short"),
    ),
    "post": ("/echo", ["-s", str(HERE / "post.lua")], _ok),
    "json": ("/json", [], _ok_json),
}

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures of wrk's (or pyload's) summary: rps, requests, latency percentiles, errors."""
    out: dict[str, Any] = {"rps": None, "requests": None, "non2xx": 0, "socket_errors": {}}
    for pct in (50, 75, 90, 99):
        out[f"p{pct}_ms"] = None
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M):
        out["rps"] = float(m.group(1))
    if m := re.search(r"^\s*(\d+) requests in [\d.]+\w+,", text, re.M):
        out["requests"] = int(m.group(1))
    for pct, value, unit in re.findall(
        r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M
    ):
        out[f"p{pct}_ms"] = float(value) * _UNIT_MS[unit]
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        out["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non2xx"] = int(m.group(1))
    return out


def check_response(port: int, scenario: str) -> str | None:
    """One request as the scenario sends it, judged; a server that answers wrongly is not timed."""
    path, extra, check = SCENARIOS[scenario]
    method, body, headers = "GET", None, {}
    if "-H" in extra:
        key, _, value = extra[extra.index("-H") + 1].partition(":")
        headers[key.strip()] = value.strip()
    if scenario == "post":
        method, body = "POST", b"x" * 65536
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        status, data = response.status, response.read()
        conn.close()
    except Exception as exc:
        return f"request failed: {exc!r}"
    return check(status, data)


class Measured:
    """CPU time of the server group, the load generator and everything else, over one run.

    The load generator has exited (and been reaped) when the run ends, so its CPU time comes
    from this process's children's rusage; the others are read from /proc.
    """

    def __init__(self, server_pgid: int) -> None:
        self.pgid = server_pgid
        self.before = harness.proc_times()
        self.children = _children_cpu()
        self.started = time.monotonic()

    def finish(self, client_pgid: int) -> dict[str, float]:
        after = harness.proc_times()
        wall = time.monotonic() - self.started
        own = {self.pgid, client_pgid, os.getpgid(0)}
        server = harness.cpu_seconds(self.before, after, {self.pgid}, inside=True)
        other = harness.cpu_seconds(self.before, after, own, inside=False)
        return {
            "wall_s": round(wall, 3),
            "server_cpu_pct": 100 * server / wall,
            "client_cpu_pct": 100 * (_children_cpu() - self.children) / wall,
            "other_pct": 100 * other / wall,
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_client(argv: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the load generator in its own process group, so its CPU time is told apart."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # a hung client, or Ctrl-C / SIGTERM: stop its group, by its id
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), proc.pid


def _start(
    spec: harness.ServerSpec, ph: harness.Placeholders, args: Any, log: Path
) -> harness.ServerProcess:
    harness.wait_quiet(args.quiet_below, args.quiet_wait)
    port = harness.free_port()
    server = harness.ServerProcess(
        spec.name, ph.expand(spec.template, port), port, args.server_cpu, args.cwd, log
    )
    server.start()
    try:
        server.wait_ready(args.start_timeout)
    except BaseException:  # not ready, or Ctrl-C / SIGTERM while waiting: never leave it
        server.stop()
        raise
    return server


def http_run(
    args: Any,
    spec: harness.ServerSpec,
    scenario: str,
    rnd: int,
    ph: harness.Placeholders,
    logdir: Path,
) -> dict[str, Any]:
    """Start the server, check one response, warm up, measure one wrk run, stop the server."""
    record: dict[str, Any] = {"server": spec.name, "scenario": scenario, "round": rnd}
    server = None
    try:
        server = _start(spec, ph, args, logdir / f"{scenario}-{spec.name}-r{rnd}.log")
        if problem := check_response(server.port, scenario):
            raise RuntimeError(problem)
        path, extra, _ = SCENARIOS[scenario]
        url = f"http://127.0.0.1:{server.port}{path}"

        def wrk(seconds: float) -> list[str]:
            argv = [
                *args.wrk,
                "-t1",
                f"-c{args.connections}",
                f"-d{seconds:g}s",
                "--latency",
                *extra,
                url,
            ]
            return harness.pinned(args.client_cpu, argv)

        if args.warmup:
            _run_client(wrk(args.warmup), args.warmup + 60)
        measured = Measured(server.pgid)
        done, client_pgid = _run_client(wrk(args.duration), args.duration + 60)
        record.update(measured.finish(client_pgid))
        record.update(parse_wrk(done.stdout))
        record["wrk_output"] = done.stdout + done.stderr
        if record["rps"] is None:
            raise RuntimeError(
                f"no Requests/sec in the load generator's output: {done.stderr[-300:]}"
            )
        if record["non2xx"] or any(record["socket_errors"].values()):
            record["error"] = (
                f"non-2xx {record['non2xx']}, socket errors {record['socket_errors']}"
            )
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        if server is not None:
            server.stop()
    return record


def ws_round(
    args: Any, spec: harness.ServerSpec, rnd: int, ph: harness.Placeholders, logdir: Path
) -> list[dict[str, Any]]:
    """One server start, then one measured echo run per connection count in ``args.conns``."""
    records: list[dict[str, Any]] = []
    server = None
    try:
        server = _start(spec, ph, args, logdir / f"ws-{spec.name}-r{rnd}.log")
        url = f"ws://127.0.0.1:{server.port}/"
        for conns in args.conns:
            record: dict[str, Any] = {
                "server": spec.name,
                "scenario": "ws",
                "round": rnd,
                "conns": conns,
            }
            argv = [args.client_python, str(HERE / "ws_client.py"), url, "-c", str(conns)]
            argv += ["-d", str(args.duration), "--size", str(args.size)]
            measured = Measured(server.pgid)
            done, client_pgid = _run_client(
                harness.pinned(args.client_cpu, argv), args.duration + 60
            )
            record.update(measured.finish(client_pgid))
            try:
                result = json.loads(done.stdout.strip().splitlines()[-1])
                record["msgs_per_s"] = result["messages"] / result["seconds"]
                if result["errors"]:
                    record["error"] = (
                        f"{result['errors']} connections failed: {result.get('error')}"
                    )
            except (ValueError, IndexError, KeyError):
                record["error"] = f"no result from ws_client.py: {done.stderr[-300:]}"
            records.append(record)
    except Exception as exc:
        records.append(
            {
                "server": spec.name,
                "scenario": "ws",
                "round": rnd,
                "error": f"{type(exc).__name__}: {exc}"[:400],
            }
        )
    finally:
        if server is not None:
            server.stop()
    return records


def _cell(values: list[float], fmt: str = ",.0f") -> str:
    stats = harness.summarize(values)
    if stats["median"] is None:
        return "-"
    spread = f" ±{100 * stats['spread'] / 2:.0f}%" if stats["spread"] else ""
    return f"{stats['median']:{fmt}}{spread}"


HEADER = (
    "| server | {unit} | x {baseline} | p99 ms | srv CPU % | client CPU % | other CPU % | errors |"
)


def _row(
    name: str, mine: list[dict[str, Any]], rows: list[dict[str, Any]], key: str, base: str
) -> str:
    good = [r for r in mine if not r.get("error")]
    cells = [
        name,
        _cell([r[key] for r in good if r.get(key)]),
        harness.fmt_ratio(harness.round_ratios(rows, name, base, key)),
        _cell([r["p99_ms"] for r in good if r.get("p99_ms")], ".2f"),
        _cell([r["server_cpu_pct"] for r in good if "server_cpu_pct" in r]),
        # results.json files from before benchmarks/loads.py call the load generator "wrk"
        _cell(
            [
                r.get("client_cpu_pct", r.get("wrk_cpu_pct"))
                for r in good
                if r.get("client_cpu_pct", r.get("wrk_cpu_pct")) is not None
            ]
        ),
        _cell([r["other_pct"] for r in good if "other_pct" in r]),
        "; ".join(sorted({r["error"][:60] for r in mine if r.get("error")})),
    ]
    return "| " + " | ".join(cells) + " |"


def report(
    runs: list[dict[str, Any]],
    names: list[str],
    groups: Sequence[tuple[str, str, int | None]],
    key: str,
    baseline: str,
) -> str:
    """A markdown table per group: median (± half the spread), ratio to the baseline, CPU."""
    unit = "req/s" if key == "rps" else "msgs/s"
    out = []
    for label, scenario, conns in groups:
        rows = [
            r
            for r in runs
            if r["scenario"] == scenario and r.get("conns") == conns and not r.get("discarded")
        ]
        if rows:
            out += ["", f"### {label}", "", HEADER.format(unit=unit, baseline=baseline)]
            out.append("|---|---:|---:|---:|---:|---:|---:|---|")
            for name in names:
                mine = [r for r in rows if r["server"] == name]
                if mine:
                    out.append(_row(name, mine, rows, key, baseline))
    return "\n".join(out)
