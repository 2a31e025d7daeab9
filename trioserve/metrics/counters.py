"""The per-process counters behind every metric: one flat array of 64-bit integers.

Why an array and not prometheus-client objects: a request has to be counted for a few
hundred nanoseconds (the metrics-on budget is 10 % of a hello request), so counting is a
handful of integer increments at fixed indexes, and everything with labels, text and
floats happens at scrape time in :mod:`.exposition`. Under a supervisor the array lives
in a small file-backed ``mmap`` in the run's metrics directory, so the supervisor reads
every worker's numbers without asking it - including a worker that was SIGKILLed, whose
file still holds what it had counted.
"""

from __future__ import annotations

import mmap
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
# Index 0: the request ended without a response status (the client left first).
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
HTTP_VERSIONS = ("1.0", "1.1", "2", "3")
# Upper bounds in seconds; the last bucket is +Inf.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
REFUSAL_REASONS = ("400", "404", "408", "413", "431", "503", "other")
LIFESPAN_STATES = ("starting", "serving", "draining", "stopped")

_METHOD_INDEX = {name: i for i, name in enumerate(METHODS)}
_OTHER_METHOD = len(METHODS) - 1
_VERSION_INDEX = {name: i for i, name in enumerate(HTTP_VERSIONS)}
_REFUSAL_INDEX = {int(r): i for i, r in enumerate(REFUSAL_REASONS[:-1])}


class Layout:
    """Where each number sits in the array; shared by the writer and the readers."""

    requests = 0  # METHODS x STATUS_CLASSES x HTTP_VERSIONS
    buckets = requests + len(METHODS) * len(STATUS_CLASSES) * len(HTTP_VERSIONS)
    duration_us = buckets + len(DURATION_BUCKETS) + 1  # sum of durations, microseconds
    bytes_received = duration_us + 1
    bytes_sent = bytes_received + 1
    app_exceptions = bytes_sent + 1
    refusals = app_exceptions + 1
    websockets_total = refusals + len(REFUSAL_REASONS)
    # Gauges: meaningful only while the process lives.
    in_flight = websockets_total + 1
    connections = in_flight + 1
    websockets = connections + 1
    lifespan_state = websockets + 1  # index into LIFESPAN_STATES
    tick_ms = lifespan_state + 1  # time.monotonic() in ms when the event loop last ran
    pid = tick_ms + 1
    size = pid + 1


SLOTS = Layout.size
FILE_SIZE = SLOTS * 8


def request_slot(method: str, status: int, http_version: str) -> int:
    m = _METHOD_INDEX.get(method, _OTHER_METHOD)
    s = status // 100 if 100 <= status <= 599 else 0
    v = _VERSION_INDEX.get(http_version, 1)
    return (m * len(STATUS_CLASSES) + s) * len(HTTP_VERSIONS) + v


class Metrics:
    """What the server calls when something countable happens; a cheap no-op when off.

    The server holds one of these whatever the configuration, so its hooks need no
    ``if``; :class:`Counters` is the one that counts.
    """

    # False: nothing is counted, and the request runner does not even call request_done()
    # (one call per request); a subclass that counts sets it True.
    enabled = False

    def request_done(
        self,
        method: str,
        status: int,
        http_version: str,
        duration: float,
        received: int,
        sent: int,
    ) -> None:
        """One HTTP request finalised (where its access-log line is written)."""

    def websocket_done(self, status: int, duration: float, sent: int) -> None:
        """One WebSocket (or refused upgrade) finished."""

    def refused(self, status: int) -> None:
        """A request refused before or instead of the app (400, 408, 413, 431, 503...)."""

    def app_exception(self) -> None:
        """The app raised (a client leaving, re-raised by a framework, does not count)."""

    def set_gauges(self, in_flight: int, connections: int, websockets: int) -> None:
        """Copy the server's live numbers in (sampled, not written per request)."""

    def set_lifespan(self, state: str) -> None:
        """``starting``, ``serving``, ``draining`` or ``stopped``; set the moment it changes."""

    def close(self) -> None:
        """Release the array (the numbers stay in the file for the supervisor)."""


class Counters(Metrics):
    """Counts into an int64 array: anonymous memory, or a file a supervisor reads."""

    enabled = True

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        if path is None:
            self._map = mmap.mmap(-1, FILE_SIZE)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, FILE_SIZE)
                self._map = mmap.mmap(fd, FILE_SIZE)
            finally:
                os.close(fd)
        self.values = memoryview(self._map).cast("q")
        self.values[Layout.pid] = os.getpid()
        self.listeners: list[Callable[..., None]] = []
        self.tick()

    def request_done(
        self,
        method: str,
        status: int,
        http_version: str,
        duration: float,
        received: int,
        sent: int,
    ) -> None:
        values = self.values
        values[request_slot(method, status, http_version)] += 1
        values[Layout.buckets + bisect_left(DURATION_BUCKETS, duration)] += 1
        values[Layout.duration_us] += int(duration * 1_000_000)
        if received:
            values[Layout.bytes_received] += received
        values[Layout.bytes_sent] += sent
        for listener in self.listeners:
            listener(status, duration)

    def websocket_done(self, status: int, duration: float, sent: int) -> None:
        values = self.values
        values[Layout.websockets_total] += 1
        values[Layout.bytes_sent] += sent

    def refused(self, status: int) -> None:
        index = _REFUSAL_INDEX.get(status, len(REFUSAL_REASONS) - 1)
        self.values[Layout.refusals + index] += 1

    def app_exception(self) -> None:
        self.values[Layout.app_exceptions] += 1

    def set_gauges(self, in_flight: int, connections: int, websockets: int) -> None:
        values = self.values
        values[Layout.in_flight] = in_flight
        values[Layout.connections] = connections
        values[Layout.websockets] = websockets
        self.tick()

    def set_lifespan(self, state: str) -> None:
        self.values[Layout.lifespan_state] = LIFESPAN_STATES.index(state)

    def tick(self) -> None:
        self.values[Layout.tick_ms] = int(time.monotonic() * 1000)

    def snapshot(self) -> list[int]:
        return self.values.tolist()

    def close(self) -> None:
        self.values.release()
        self._map.close()


def read_snapshot(path: str) -> list[int] | None:
    """A copy of a worker's array from its file (None if it is gone or not yet full size)."""
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_SIZE)
    except OSError:
        return None
    if len(data) != FILE_SIZE:
        return None
    return memoryview(data).cast("q").tolist()


def lifespan_name(value: Any) -> str:
    index = int(value)
    return LIFESPAN_STATES[index] if 0 <= index < len(LIFESPAN_STATES) else "starting"
