"""Request heads for the httptools protocol: llhttp's reading, h11's verdict where they differ.

A plain head (h11's request-line grammar, one Host, at most one Content-Length or one
``Transfer-Encoding: chunked``) is split by llhttp in C. Anything else, or anything llhttp
refuses, is parsed by a throwaway ``h11.Connection``, so :mod:`.http11_fast` accepts and
refuses exactly the heads :mod:`.http11` does.
"""

from __future__ import annotations

import re
from typing import Any

import h11

from .events import BadRequest, Headers

try:
    import httptools
except ImportError:  # pragma: no cover - the optional "speed" extra
    httptools = None  # type: ignore[assignment]

HAVE_HTTPTOOLS = httptools is not None
CL_MAX_DIGITS = 20  # h11's limit on a Content-Length value

# h11's grammar for the request line, so a line llhttp takes is one h11 would take too.
_REQUEST_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])"
).fullmatch


class _Collector:
    """llhttp's callbacks land here: the header pairs, and whether the message ended."""

    __slots__ = ("complete", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete = True


# Parsers are shared, not per connection: a head is parsed in one call, so a parser left
# clean (its message complete) serves the next head of any connection. list.pop/append
# keep this safe should two threads run servers.
_spare: list[tuple[Any, _Collector]] = []


def _llhttp_headers(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """The head's header pairs as llhttp reads them, or None if llhttp refuses the head."""
    try:
        parser, collector = _spare.pop()
    except IndexError:
        collector = _Collector()
        parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        return collector.headers  # the parser waits for the new protocol: not reused
    except httptools.HttpParserError:
        return None
    finally:
        pairs = collector.headers
        collector.headers = []
    if collector.complete:  # no body expected: the parser is ready for the next head
        collector.complete = False
        _spare.append((parser, collector))
    return pairs


class RequestHead:
    """A parsed head with the facts the framing needs."""

    __slots__ = (
        "chunked",
        "close",
        "expects_continue",
        "headers",
        "length",
        "method",
        "raw",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self, method: bytes, target: bytes, version: str) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers: Headers = []
        self.raw: Headers = []
        self.length = -1
        self.chunked = False
        self.close = version != "1.1"
        self.expects_continue = False
        self.upgrade = False  # a protocol switch proposal (h11: any Upgrade value)


def _read_headers(head: RequestHead, pairs: list[tuple[bytes, bytes]], strict: bool) -> bool:
    """Fill ``head`` from (wire name, value) pairs; False: not plain enough for llhttp's word.

    ``strict`` (llhttp's pairs) refuses what h11 must judge: several Host or Content-Length
    fields, a Transfer-Encoding other than one ``chunked``, Content-Length next to it.
    h11's pairs are already judged and normalised.
    """
    headers = head.headers
    raw = head.raw
    hosts = 0
    for name, value in pairs:
        if value and value[-1] in (9, 32):  # llhttp keeps trailing whitespace
            value = value.rstrip(b" \t")
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"content-length":
            if strict and (head.length != -1 or not value.isdigit() or len(value) > CL_MAX_DIGITS):
                return False
            head.length = int(value)
        elif lname == b"transfer-encoding":
            if strict and (head.chunked or value.lower() != b"chunked"):
                return False
            head.chunked = True
            value = b"chunked"  # h11 passes it on lowercased
        elif lname == b"connection":
            tokens = [t.strip() for t in value.lower().split(b",")]
            if b"close" in tokens:
                head.close = True
        elif lname == b"upgrade" and value.strip(b" \t,"):
            head.upgrade = True
        elif lname == b"expect" and value.lower() == b"100-continue":
            head.expects_continue = True
        headers.append((lname, value))
        raw.append((name, value))
    if strict:
        if head.chunked and head.length != -1:
            return False
        if hosts > 1 or (hosts == 0 and head.version == "1.1"):
            return False
    return True


def _h11_head(head: bytes) -> RequestHead | BadRequest:
    """h11's verdict on a head llhttp refused or that is not plain."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        event: Any = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return BadRequest(exc.error_status_hint, str(exc) or "invalid request")
    if type(event) is not h11.Request:  # pragma: no cover - a whole head was given
        return BadRequest(400, "invalid request head")
    parsed = RequestHead(event.method, event.target, event.http_version.decode("ascii"))
    _read_headers(parsed, list(event.headers.raw_items()), strict=False)
    return parsed


def parse_head(head: bytes) -> RequestHead | BadRequest:
    if httptools is not None:
        line = _REQUEST_LINE(head, 0, head.find(b"\r\n"))
        if line is not None:
            pairs = _llhttp_headers(head)
            if pairs is not None:
                method, target, version = line.groups()
                parsed = RequestHead(method, target, version.decode("ascii"))
                if _read_headers(parsed, pairs, strict=True):
                    return parsed
    return _h11_head(head)
