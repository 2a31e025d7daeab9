"""Header rules that no HTTP version should have to repeat: validation and defaults."""

from __future__ import annotations

import re
from email.utils import formatdate

from .events import Headers

# RFC 9110 5.1 / 5.5: a field name is a token; a value has no CR, LF or NUL.
_is_token = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
# One search finds both what is refused (CR, LF, NUL) and what is trimmed (leading or
# trailing OWS, RFC 9110 5.5: not part of the value), so a plain value costs one search.
_unusual_value = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$").search


class InvalidHeader(ValueError):
    """An app gave a header that must never reach the wire."""


def validate_response_headers(raw: object) -> Headers:
    """Check an ASGI header list, returning it as (lowercase name, value) byte pairs.

    Anything wrong raises :class:`InvalidHeader`, which the server turns into a 500, so a
    CR/LF from app data can never split a response.
    """
    if not isinstance(raw, (list, tuple)):
        raise InvalidHeader(f"headers must be a list of (name, value) pairs, got {raw!r}")
    out: Headers = []
    append = out.append
    for item in raw:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidHeader(f"header {item!r} is not a (name, value) pair") from None
        if type(name) is not bytes or type(value) is not bytes:
            if not isinstance(name, (bytes, bytearray)) or not isinstance(
                value, (bytes, bytearray)
            ):
                raise InvalidHeader(f"header {item!r} must be a pair of bytes")
            name, value = bytes(name), bytes(value)
        if not _is_token(name):
            raise InvalidHeader(f"invalid header name {name!r}")
        if _unusual_value(value):
            value = value.strip(b" \t")
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                raise InvalidHeader(f"invalid value for header {name!r}: {value!r}")
        append((name.lower(), value))
    return out


def parse_default_headers(items: list[str]) -> Headers:
    """Turn ``--header NAME:VALUE`` strings into validated header pairs."""
    pairs: list[tuple[bytes, bytes]] = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"header {item!r} must look like NAME:VALUE")
        pairs.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
    return validate_response_headers(pairs)


class DateHeader:
    """The Date header value, formatted at most once per second of the clock given."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


def plain_error(status: int, extra: Headers) -> tuple[Headers, bytes]:
    """Headers and body of the server's own short plain-text answer on an HTTP/2 or HTTP/3
    stream (HTTP/1.1 writes its own, whole, in ``http11_rules.error_response``)."""
    body = b"%d\n" % status
    headers = [
        *extra,
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    return headers, body
