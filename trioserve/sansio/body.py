"""What an ASGI ``receive()`` answers for a request body, as one explicit state.

The trio layer asks :meth:`RequestBody.action` what to do next (read a piece, send
``100 Continue`` first, wait for the peer to leave, or answer ``http.disconnect`` at once),
does it, and reports back. Every HTTP version shares it: HTTP/1.1 reads pieces from the
socket, an HTTP/2 or HTTP/3 stream from its own buffer.
"""

from __future__ import annotations

from typing import Any

from .events import NEED_DATA

# The states. One int, so a request costs no flag set and no enum lookup.
CONTINUE = 0  # 100-continue was asked for and not yet answered; nothing read
READING = 1  # body pieces are still to come
COMPLETE = 2  # the whole body was handed out; the next receive() waits for the peer to leave
GONE = 3  # the peer is gone, the body was cut, or the app is done: always http.disconnect
TOO_LARGE = 4  # the body grew past the limit: the app saw http.disconnect, the answer is 413
TIMED_OUT = 5  # the body kept us waiting too long: the app saw http.disconnect, answer 408

# What receive() must do in each state (action() returns the state itself: same numbers).
SEND_CONTINUE = CONTINUE
READ = READING
WAIT_FOR_DISCONNECT = COMPLETE

# One piece of a body as a connection hands it over: (bytes, more_body); None when the body
# will never complete (peer gone, cut short, timed out, malformed).
BodyPiece = tuple[bytes, bool] | None

# A port's answer when no piece is buffered yet (it must wait for the peer).
NOT_YET = NEED_DATA


class RequestBody:
    """The request-body side of one request: pieces in, ASGI ``http.request`` messages out."""

    __slots__ = ("limit", "received", "state", "waited")

    def __init__(self, limit: int | None, *, expects_continue: bool, skip: bool = False) -> None:
        """``skip``: the request is refused before the app sees its body (it reads as empty)."""
        self.limit = limit
        self.received = 0
        self.waited = 0.0  # seconds spent waiting for the peer's body bytes
        self.state = COMPLETE if skip else (CONTINUE if expects_continue else READING)

    def action(self) -> int:
        """READ, SEND_CONTINUE, WAIT_FOR_DISCONNECT, or anything else: answer disconnect."""
        return self.state

    def continue_handled(self) -> None:
        """``100 Continue`` was sent, or can no longer be (a response already started)."""
        if self.state == CONTINUE:
            self.state = READING

    def on_piece(self, piece: BodyPiece) -> dict[str, Any]:
        """The ASGI message for a piece the connection read (None: the body is cut)."""
        if piece is None:
            self.state = GONE
            return {"type": "http.disconnect"}
        data, more = piece
        received = self.received = self.received + len(data)
        limit = self.limit
        if limit is not None and received > limit:
            self.state = TOO_LARGE
            return {"type": "http.disconnect"}
        if not more:
            self.state = COMPLETE
        return {"type": "http.request", "body": data, "more_body": more}

    def wait_budget(self, timeout: float | None, min_rate: float) -> float | None:
        """Seconds the peer may still keep us waiting for the body (None: no limit).

        ``timeout`` plus one second per ``min_rate`` bytes received, minus the time already
        spent waiting. Only waiting counts: an app that reads slowly is not the peer's
        fault. A trickle (one byte every few seconds) runs out; a slow but steady upload
        earns its time as it goes.
        """
        if timeout is None:
            return None
        allowance = timeout + (self.received / min_rate if min_rate > 0 else 0.0)
        return max(allowance - self.waited, 0.0)

    def on_timeout(self) -> dict[str, Any]:
        """The peer kept us waiting past the budget (or read_timeout): disconnect, then 408."""
        if self.state != TOO_LARGE:
            self.state = TIMED_OUT
        return {"type": "http.disconnect"}

    def on_disconnect(self) -> dict[str, Any]:
        """The peer left (or the server stops waiting for it): one http.disconnect."""
        if self.state not in (TOO_LARGE, TIMED_OUT):
            self.state = GONE
        return {"type": "http.disconnect"}

    def finish(self) -> None:
        """The app is done: any receive() it still makes (from a leftover task) says disconnect."""
        if self.state not in (TOO_LARGE, TIMED_OUT):
            self.state = GONE

    @property
    def timed_out(self) -> bool:
        return self.state == TIMED_OUT

    @property
    def too_large(self) -> bool:
        return self.state == TOO_LARGE
