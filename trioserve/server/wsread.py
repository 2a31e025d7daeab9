"""The reading side of a WebSocket (see :mod:`.websocket` for the whole picture): one read
with the keep-alive deadline (a ping when it passes, a 1011 close when the pong is
overdue), the parse into app messages, and the *pump* that reads ahead for an app that
stays away from ``receive()``, up to ``max_app_queue_size`` messages.

:class:`WebSocketReader` holds the state those share; :class:`~.websocket.WebSocketHandler`
adds the app's channels and the WebSocket's lifetime on top.
"""

from __future__ import annotations

import math
from typing import Any

import trio
from trio.lowlevel import checkpoint_if_cancelled, wait_readable

from ..logs import error_log
from ..sansio.websocket import WebSocketSession
from ..sansio.wsframes import message_bytes
from .exchange import Exchange
from .peer import READ_SIZE, STREAM_ERRORS, PeerStream
from .sockstream import SocketStream
from .state import ServerState
from .transport import ConnectionInfo
from .wsreadahead import budget_for

# Bound on writing our close frame to a peer that stopped answering pings.
_ABORT_WRITE_TIMEOUT = 1.0
# Bound on waiting for a pump to hand the socket back once the WebSocket is over.
_STOP_TIMEOUT = 1.0

_PUMP_NAME = f"{__name__}.WebSocketReader._pump"


class WebSocketReader(Exchange):
    """Reads for one WebSocket: the app's own reads, keep-alive pings, and the pump."""

    # Up to thousands of these sit idle: no per-instance __dict__.
    __slots__ = (
        "__weakref__",
        "_budget",
        "_calls",
        "_held",
        "_next_ping",
        "_nursery",
        "_pending",
        "_ping_count",
        "_pong_due",
        "_pump_scope",
        "_queue_limit",
        "_seen_calls",
        "info",
        "peer",
        "session",
    )

    def __init__(
        self,
        peer: PeerStream,
        state: ServerState,
        info: ConnectionInfo,
        session: WebSocketSession,
        scope: dict[str, Any],
        nursery: trio.Nursery,
    ) -> None:
        self.peer = peer
        self.state = state
        self.info = info
        self.session = session
        self.scope = scope
        # Messages parsed but not yet given to the app, in reverse order (pop() is next).
        self._pending: list[dict[str, Any]] = []
        self._queue_limit = max(1, state.config.max_app_queue_size)
        # Inflated bytes in _pending, and the server-wide budget they count against.
        self._held = 0
        self._budget = budget_for(state)
        # receive() calls so far, and as the watchdog last saw them.
        self._calls = 0
        self._seen_calls = -1
        self._pump_scope: trio.CancelScope | None = None
        self._nursery = nursery
        # Keep-alive timers (trio clock); inf when off.
        self._next_ping = math.inf
        self._pong_due = math.inf
        self._ping_count = 0

    async def _fill(self, ahead: bool = False) -> list[dict[str, Any]]:
        """Read once (or until a keep-alive deadline) and parse: messages for the app.

        The caller holds the read turn; ``ahead``: it is a pump (see ``_feed``). Frames
        a parse left for later (``session.backlog``) are parsed before anything is read.
        Replies the protocol owes the peer are written here, in one write per read.
        """
        session = self.session
        peer = self.peer
        if session.backlog:
            return await self._parse_backlog(ahead)
        # PeerStream.receive_in_turn() inlined: no frame of its own per idle WebSocket.
        data: bytes | bytearray = b""
        try:
            stream = peer.stream
            if self._next_ping == math.inf:
                data = await stream.receive_some(READ_SIZE)
            elif type(stream) is SocketStream and (ready := await _ready(stream)) is not None:
                # Bytes already waiting need no deadline: a cancel scope per message would
                # cost about a third of an echo's CPU, and a peer that sends is alive.
                data = ready
            else:
                deadline = self._next_ping
                if session.awaiting_pong is not None and self._pong_due != math.inf:
                    deadline = self._pong_due
                with trio.CancelScope(deadline=deadline) as timer:
                    if type(stream) is SocketStream:
                        # _ready() found nothing: wait for the socket itself. No frame of
                        # SocketStream's (nor the frame object a failed read would leave)
                        # sits on the stack of every idle WebSocket.
                        while True:
                            await wait_readable(stream.socket)
                            if (ready := stream.receive_ready(READ_SIZE)) is not None:
                                break
                        data = ready
                    else:
                        data = await stream.receive_some(READ_SIZE)
                if timer.cancelled_caught:
                    return await self._on_timer()
        except STREAM_ERRORS:
            data = b""
        messages = self._feed(data if data else None, ahead)
        out = session.data_to_send()
        if out and not peer.broken:
            await peer.send_quietly(out)
        return messages

    async def _parse_backlog(self, ahead: bool) -> list[dict[str, Any]]:
        """Parse frames already read (a parse stopped at its limit) instead of reading."""
        await trio.lowlevel.checkpoint()
        messages = self._feed(b"", ahead)
        out = self.session.data_to_send()
        if out and not self.peer.broken:
            await self.peer.send_quietly(out)
        return messages

    def _feed(self, data: bytes | bytearray | None, ahead: bool = False) -> list[dict[str, Any]]:
        """Give wsproto what was read (None: the peer is gone); the messages for the app.

        A parse produces at most what the queue and the server-wide read-ahead budget
        have room for, counted inflated (a pump, ``ahead``, may get nothing); an app
        waiting in ``receive()`` always gets at least one message.
        """
        session = self.session
        budget = self._budget
        limit = self._queue_limit - len(self._pending)
        byte_limit = budget.limit - budget.used
        if not ahead:
            if limit < 1:
                limit = 1
            if byte_limit < 1:
                byte_limit = 1
        try:
            session.receive_data(data, limit)
            return session.app_messages(limit, byte_limit)
        except Exception:
            error_log.exception("Unexpected error reading WebSocket %s", self.scope["path"])
            self.peer.give_up()
            lost = session.connection_lost()
            return [lost] if lost is not None else []

    async def _on_timer(self) -> list[dict[str, Any]]:
        """A keep-alive deadline passed during a read: ping, or give up on the peer."""
        session = self.session
        now = trio.current_time()
        if session.awaiting_pong is not None and now >= self._pong_due:
            return await self._abort(f"no pong within {self.state.config.websocket_ping_timeout}s")
        if now >= self._next_ping:
            config = self.state.config
            self._next_ping = now + (config.websocket_ping_interval or math.inf)
            self._ping_count += 1
            data = session.ping(self._ping_count.to_bytes(4, "big"))
            if not data:
                self._next_ping = math.inf  # closing: no more pings
                return []
            timeout = config.websocket_ping_timeout
            self._pong_due = math.inf if timeout is None else now + timeout
            if not self.peer.broken:
                await self.peer.send_quietly(data)
        return []

    async def _abort(self, reason: str) -> list[dict[str, Any]]:
        """Give up on an unresponsive peer: close 1011, and the app sees 1006 once."""
        error_log.info(
            "%s: closing WebSocket %s: %s", self.info.client_text, self.scope["path"], reason
        )
        self._next_ping = self._pong_due = math.inf
        data = self.session.close(1011, "keepalive ping timeout")
        if data and not self.peer.broken:
            with trio.move_on_after(_ABORT_WRITE_TIMEOUT):
                await self.peer.send_quietly(data)
        self.peer.give_up()
        lost = self.session.connection_lost()
        return [lost] if lost is not None else []

    async def _take_read_turn(self) -> None:
        """Hold the read turn for good (the WebSocket is over): a pump is stopped first."""
        if self._pump_scope is not None:
            self._pump_scope.cancel()
        await self.peer.take_read_turn()

    async def _stop_reading(self) -> None:
        """No pump may still read once the stream is being closed."""
        if self._pump_scope is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT):
            await self._take_read_turn()

    # -- reading while the app is away ------------------------------------------------------
    def watch(self) -> None:
        """Called by the watchdog: start a pump if the app has stayed away from receive()."""
        calls = self._calls
        if calls != self._seen_calls:
            self._seen_calls = calls
            return
        self._start_pump()

    def _start_pump(self) -> None:
        if (
            self.peer.reading
            or self._pump_scope is not None
            or self.peer.broken
            or self.session.disconnect is not None
            or len(self._pending) >= self._queue_limit
            or self._budget.used >= self._budget.limit
        ):
            return
        self._pump_scope = trio.CancelScope()
        self._nursery.start_soon(self._pump, self._pump_scope, name=_PUMP_NAME)

    async def _pump(self, scope: trio.CancelScope) -> None:
        """Read for an app that is not reading, until it calls receive() again or the
        buffer is full; answering pings and the client's close on the way."""
        session = self.session
        pending = self._pending
        try:
            with scope:
                peer = self.peer
                if peer.reading:
                    return
                await peer.take_read_turn()  # free: taken without waiting
                try:
                    while (
                        not peer.readers_waiting
                        and session.disconnect is None
                        and not self.peer.broken
                        and len(pending) < self._queue_limit
                        and self._budget.used < self._budget.limit
                    ):
                        messages = await self._fill(ahead=True)
                        if messages:
                            self._hold(messages)
                finally:
                    peer.end_read_turn()
        except Exception:  # never take the server's connections nursery down
            error_log.exception("Unexpected error reading WebSocket %s", self.scope["path"])
            self.peer.give_up()
        finally:
            if self._pump_scope is scope:
                self._pump_scope = None

    # -- the read-ahead queue and its budget ------------------------------------------------
    def _hold(self, messages: list[dict[str, Any]]) -> None:
        """Queue parsed messages for the app (next first), counted against the budget."""
        if self._held < 0:  # the app has returned: a pump still winding down read these
            return
        self._held += self._budget.hold(messages)
        messages.reverse()
        self._pending[:0] = messages

    def _pop(self) -> dict[str, Any]:
        message = self._pending.pop()
        if self._held > 0:
            size = message_bytes(message)
            self._held -= size
            self._budget.used -= size
        return message

    def _release_all(self, final: bool = False) -> None:
        """The app will take no more messages: drop the queue and give its bytes back
        (``final``: the app has returned, nothing is queued from now on)."""
        self._pending.clear()
        if self._held > 0:
            self._budget.used -= self._held
        self._held = -1 if final else 0


async def _ready(stream: SocketStream) -> bytes | None:
    """What a plain socket already holds, after a cancellation check (see ``_fill``)."""
    await checkpoint_if_cancelled()
    return stream.receive_ready(READ_SIZE)
