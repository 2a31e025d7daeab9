"""What a supervisor and its workers say to each other over one socketpair per worker.

The supervisor sends the start-up :class:`Payload` once (length-prefixed pickle), then
single-byte commands; the worker answers with single-byte messages. Any byte from a worker
counts as a heartbeat, and end-of-file on either side means the other process is gone,
so neither side ever needs to poll the other.
"""

from __future__ import annotations

import importlib
import pickle
import socket
from dataclasses import dataclass

from ..binds import Bind
from ..config import Config

# worker -> supervisor
READY = b"R"  # serving: listeners open, lifespan startup done
BEAT = b"H"  # still alive: the event loop is not blocked
RETIRE = b"M"  # max_requests reached: please start my replacement, then stop me

# supervisor -> worker
STOP = b"S"  # stop gracefully (drain within graceful_timeout)
FORCE = b"F"  # cancel the requests still in flight, then stop

_LENGTH = 4


@dataclass(frozen=True)
class Payload:
    """Everything a fresh worker process needs; its listening sockets come as fds."""

    config: Config
    binds: list[Bind]
    fds: list[int]
    sys_path: list[str]
    heartbeat_interval: float
    title: str
    metrics_dir: str | None = None  # each worker counts into a file here (metrics_bind)


def send_payload(sock: socket.socket, payload: Payload) -> None:
    data = pickle.dumps(payload)
    sock.sendall(len(data).to_bytes(_LENGTH, "big") + data)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError("supervisor closed the channel during start-up")
        chunks += chunk
    return bytes(chunks)


def recv_payload(sock: socket.socket) -> Payload:
    size = int.from_bytes(_recv_exactly(sock, _LENGTH), "big")
    payload = pickle.loads(_recv_exactly(sock, size))
    if not isinstance(payload, Payload):
        raise TypeError(f"unexpected start-up payload {type(payload).__name__}")
    return payload


def set_process_title(title: str) -> None:
    """Name the process in ps/top when the optional ``setproctitle`` package is installed."""
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        return
    module.setproctitle(title)
