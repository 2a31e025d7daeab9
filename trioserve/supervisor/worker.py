"""A worker process: ``python -m trioserve.supervisor.worker FD``.

Started by the supervisor with ``subprocess`` (a fresh interpreter, never a fork, so no
state leaks between reloads and no user ``__main__`` is re-run), it reads its
:class:`~trioserve.supervisor.protocol.Payload` from the channel ``FD``, then serves on the
inherited listening sockets through :func:`trioserve.run.run_worker`. A
:class:`SupervisorLink` task beside the server reports readiness, heartbeats (sent by a trio
task, so they stop when the event loop is blocked) and the max_requests limit, and turns
the supervisor's STOP, or its disappearance, into a graceful shutdown.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from .._runner import run_worker
from ..exit_codes import EXIT_ERROR, EXIT_OK
from ..logs import configure_logging, error_log
from .protocol import BEAT, FORCE, READY, RETIRE, STOP, recv_payload, set_process_title


class SupervisorLink:
    """The worker's end of its channel to the supervisor (a :class:`trioserve.run.WorkerLink`)."""

    def __init__(self, channel: socket.socket, heartbeat_interval: float) -> None:
        self._channel = channel
        self._interval = heartbeat_interval
        self._outbox_send, self._outbox = trio.open_memory_channel[bytes](math.inf)
        self._retiring = False

    def max_requests_reached(self) -> None:
        if self._retiring:
            return
        self._retiring = True
        error_log.info("Maximum request limit reached; asking the supervisor for a replacement")
        self._outbox_send.send_nowait(RETIRE)

    async def run(self, shutdown_trigger: trio.Event, cancel: Callable[[], None]) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(self._channel))
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, stream)
                nursery.start_soon(self._signal_loop, signals, shutdown_trigger)
                await self._receive_loop(stream, shutdown_trigger, cancel)
                nursery.cancel_scope.cancel()

    async def _signal_loop(self, signals: AsyncIterator[int], trigger: trio.Event) -> None:
        """SIGTERM (from an admin, or systemd signalling the whole group) only ever drains:
        cutting requests short is the supervisor's call (its second SIGINT/SIGTERM)."""
        async for _ in signals:
            if not trigger.is_set():
                error_log.info("Received SIGTERM, shutting down")
                trigger.set()

    async def _send_loop(self, stream: trio.SocketStream) -> None:
        """The only sender: READY first, then queued messages, else a beat per interval."""
        message = READY
        while True:
            try:
                await stream.send_all(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the receive loop sees the same and shuts down
            message = BEAT
            with trio.move_on_after(self._interval):
                message = await self._outbox.receive()

    async def _receive_loop(
        self, stream: trio.SocketStream, trigger: trio.Event, cancel: Callable[[], None]
    ) -> None:
        while True:
            try:
                data = await stream.receive_some(64)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if not trigger.is_set():
                    error_log.warning("Supervisor is gone; shutting down")
                    trigger.set()
                return
            if STOP in data and not trigger.is_set():
                error_log.info("Stopping gracefully (asked by the supervisor)")
                trigger.set()
            if FORCE in data:
                error_log.info("Cancelling requests in flight (asked by the supervisor)")
                trigger.set()
                cancel()


def _ignore(signum: int, frame: object) -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m trioserve.supervisor.worker FD (started by the supervisor)")
        return EXIT_ERROR
    # Ctrl+C reaches the whole process group: the supervisor turns it into STOP (then FORCE),
    # so here SIGINT does nothing. A Python handler, not SIG_IGN, so processes the app
    # starts get the default back. Job-control signals are the supervisor's too.
    signal.signal(signal.SIGINT, _ignore)
    for signum in (signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    try:
        try:
            channel = socket.socket(fileno=int(args[0]))
            channel.set_inheritable(False)
            payload = recv_payload(channel)
        except (OSError, EOFError, TypeError, pickle.UnpicklingError) as exc:
            print(f"trioserve worker: no start-up payload from the supervisor: {exc}")
            return EXIT_ERROR
        sys.path[:] = payload.sys_path + [p for p in sys.path if p not in payload.sys_path]
        configure_logging(payload.config)
        set_process_title(payload.title)
        sockets = []
        for bind, fd in zip(payload.binds, payload.fds, strict=True):
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)  # not passed on to processes the app starts
            sockets.append((bind, sock))
        link = SupervisorLink(channel, payload.heartbeat_interval)
        metrics_path = None
        if payload.metrics_dir is not None:
            metrics_path = os.path.join(payload.metrics_dir, f"worker-{os.getpid()}.counters")
        return run_worker(payload.config, sockets=sockets, link=link, metrics_path=metrics_path)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is ignored above
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
