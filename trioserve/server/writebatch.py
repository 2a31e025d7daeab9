"""Small response writes gathered within a pass of trio's scheduler and sent together.

A keep-alive response's last write does not need to leave the moment it is framed: the
connection's task yields to the scheduler right after it anyway (the schedule point its
write skipped, taken once the request is done). So a complete response of up to
``DEFER_LIMIT`` bytes on a plain socket is handed to this per-run :class:`WriteBatch`
instead, and the writes handed over during one pass of trio's scheduler are sent together:
every ``FLUSH_AT`` of them, and the rest just before trio next waits for I/O (the
``before_io_wait`` instrument hook), ahead of the writing tasks' next steps. Nothing is
reordered or delayed past the pass: a writing task runs again only in the next pass, after
the send.

Why: on loopback and on a busy host, each send that finds the client's thread asleep pays
for waking it (an inter-processor interrupt; on a VM, an exit to the hypervisor). Sent
back to back, a batch's responses wake a client once, and the server's kernel time per
keep-alive request more than halves (hello, 64 connections: about 30 -> 12 us of system CPU
per request). A response waits at most while the pass serves ``FLUSH_AT - 1`` more, or
for the rest of the pass if that is shorter.

What the kernel does not take at once (a client that stopped reading) stays with the
stream and is written by its own task, which waits for it; a failed send is kept for that
task too (:meth:`~.sockstream.SocketStream.settle_deferred`). The hook never raises: trio
would drop an instrument that did.
"""

from __future__ import annotations

from typing import Protocol

import trio
from trio.lowlevel import RunVar

# A response up to this size may wait for the end of the pass (larger ones are sent at
# once: they would not fit a socket buffer anyway, and their copy costs more than a wake).
DEFER_LIMIT = 16 * 1024
# A pass's batch is also sent as soon as it holds this many writes. Held to the end of a
# long pass, the responses reach the clients in one burst after it, so the clients idle
# during the pass and the server waits for their next requests after it (measured, hello
# with 64 connections: 9.4k req/s held to the end, 14.9k sent by 8, 12.4k by 4, base 9.3k).
FLUSH_AT = 8

_CURRENT: RunVar[WriteBatch] = RunVar("trioserve_write_batch")


class DeferredWriter(Protocol):
    """A stream with a write waiting in the batch (``sockstream.SocketStream``)."""

    deferred_error: OSError | None

    def send_deferred(self) -> None:
        """Send the waiting write without waiting; keep the rest, or the OSError met."""


class WriteBatch(trio.abc.Instrument):
    """The streams with a write waiting for the end of this scheduler pass."""

    __slots__ = ("streams",)

    def __init__(self) -> None:
        self.streams: list[DeferredWriter] = []

    def before_io_wait(self, timeout: float) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the waiting writes now (the hook, or the ``FLUSH_AT``-th write)."""
        streams = self.streams
        if not streams:
            return
        self.streams = []
        for stream in streams:
            try:
                stream.send_deferred()
            except BaseException as exc:  # pragma: no cover - send_deferred keeps OSErrors
                stream.deferred_error = exc if isinstance(exc, OSError) else OSError(str(exc))


def current_write_batch() -> WriteBatch:
    """This trio run's batch, installed as an instrument on first use."""
    try:
        return _CURRENT.get()
    except LookupError:
        batch = WriteBatch()
        trio.lowlevel.add_instrument(batch)
        _CURRENT.set(batch)
        return batch
