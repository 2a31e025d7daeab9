"""Exceptions that cross the public boundary."""

from __future__ import annotations


class ClientDisconnected(OSError):
    """Raised by ``send()`` once the client has gone away (ASGI: an ``OSError`` subclass)."""


class LifespanFailure(RuntimeError):
    """The app's lifespan startup failed; the server does not start (exit code 3)."""


class AppLoadError(RuntimeError):
    """The app import string could not be turned into an ASGI app; the message is one line."""


class SendTimeout(ClientDisconnected):
    """Raised by ``send()`` when the client did not read for ``send_timeout`` seconds.

    The connection is closed: to the app it is a disconnect like any other.
    """
