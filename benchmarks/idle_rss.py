"""Memory held per idle connection: N keep-alive HTTP connections or N idle WebSockets.

The server is started anew, warmed by a few requests, and its resident memory (VmRSS summed
over its process group) is read; then N connections are opened in batches, each completing
one request (HTTP: a GET answered in full, kept alive; WebSocket: the handshake and one
echoed message) and then left idle. After a settle time RSS is read again, with VmHWM (the
peak). ``kib_per_conn`` = (RSS with N idle - RSS before) / N.

Servers need a keep-alive timeout longer than the time it takes to open N connections, so
the runner gives each one a flag for that (see run.py ``IDLE_FLAGS``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

from harness import ServerProcess, ServerSpec, free_port, pinned
from ws_client import client_frame


def group_memory_kib(pgid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB summed over the live processes of process group ``pgid``."""
    rss = hwm = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return rss, hwm


async def _open_http(port: int) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"bad answer {head[:60]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return writer


async def _open_ws(port: int) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"bad handshake {head[:60]!r}")
    message = b"idle-websocket!!"
    writer.write(client_frame(0x1, message))
    echo = await reader.readexactly(2 + len(message))
    if echo[2:] != message:
        raise ConnectionError(f"bad echo {echo!r}")
    return writer


async def _hold(
    kind: str, port: int, count: int, batch: int, settle: float, measure: Any
) -> dict[str, Any]:
    opener = _open_http if kind == "http" else _open_ws
    writers: list[Any] = []
    t0 = time.perf_counter()
    try:
        while len(writers) < count:
            n = min(batch, count - len(writers))
            writers += await asyncio.wait_for(
                asyncio.gather(*(opener(port) for _ in range(n))), 60
            )
        opened_s = time.perf_counter() - t0
        await asyncio.sleep(settle)
        result: dict[str, Any] = measure()
        # Still open? (a server that dropped them would have freed their memory)
        alive = sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())
        result.update(open_s=round(opened_s, 2), alive_client_side=alive)
        return result
    finally:
        for w in writers:
            w.close()


def run_idle(
    spec: ServerSpec,
    template: str,
    kind: str,
    count: int,
    *,
    server_cpu: str | None,
    cwd: str,
    log_path: Any,
    batch: int = 100,
    settle: float = 2.0,
    start_timeout: float = 30.0,
) -> dict[str, Any]:
    """One server, one measurement. Returns a record for the results table."""
    port = free_port()
    command = template.format(port=port)
    srv = ServerProcess(spec.name, command, port, server_cpu, cwd, Path(log_path))
    rec: dict[str, Any] = {
        "server": spec.name,
        "scenario": f"idle-{kind}",
        "count": count,
        "command": command,
    }
    srv.start()
    try:
        srv.wait_ready(start_timeout)
        # Warm up: the first requests import and allocate what every request needs.
        asyncio.run(_hold(kind, port, 20, 20, 0.5, lambda: {}))
        time.sleep(0.5)
        base_rss, _ = group_memory_kib(srv.pgid)

        def measure() -> dict[str, Any]:
            rss, hwm = group_memory_kib(srv.pgid)
            return {"rss_kib": rss, "hwm_kib": hwm}

        res = asyncio.run(_hold(kind, port, count, batch, settle, measure))
        rec.update(res)
        rec["base_rss_kib"] = base_rss
        rec["kib_per_conn"] = (res["rss_kib"] - base_rss) / count
        if srv.proc is not None and srv.proc.poll() is not None:
            rec["error"] = f"server exited with {srv.proc.returncode}"
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        srv.stop()
    return rec


__all__ = ["group_memory_kib", "pinned", "run_idle"]
