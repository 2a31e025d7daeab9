"""Request ids: the client's (or a proxy's) ``X-Request-ID`` if it is sane, else a new one.

Sane means 1-128 characters from a set that cannot break a log line, a JSON field or a
response header (letters, digits and ``-_.~:/+=@``), so a client cannot inject into the
logs through it. A new id is 32 hex digits: a random per-process prefix and a counter,
unique across processes and hosts without a system call per request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MAX_LENGTH = 128
_SANE = re.compile(rb"[A-Za-z0-9\-_.~:/+=@]{1,%d}" % MAX_LENGTH)


class RequestIds:
    """Picks the id of each request; one per server (and so per worker process)."""

    __slots__ = ("_made", "_prefix", "header")

    def __init__(self, header: str) -> None:
        self.header = header.lower().encode("latin-1")
        self._prefix = os.urandom(10).hex()
        self._made = 0  # ids made so far (an int, not itertools.count: no call per id)

    def pick(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The request's id: its header's value when sane, else a fresh one."""
        wanted = self.header
        for name, value in headers:
            if name == wanted:
                if _SANE.fullmatch(value):
                    return value.decode("ascii")
                break
        return self.new()

    def new(self) -> str:
        self._made = made = self._made + 1
        return f"{self._prefix}{made & 0xFFFFFFFFFFFF:012x}"
