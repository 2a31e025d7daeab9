"""Request heads for the httptools protocol: llhttp's reading, h11's verdict where they differ.

A plain head (h11's request-line grammar, one Host, at most one Content-Length or one
``Transfer-Encoding: chunked``) is split by llhttp in C. Anything else, or anything llhttp
refuses, is parsed by a throwaway ``h11.Connection``, so :mod:`.http11_fast` accepts and
refuses exactly the heads :mod:`.http11` does.

A client sends the same field lines with every request of a connection (and every client
of a kind the same ones), while the request line changes. So what a field block gave is
remembered (:data:`_KNOWN`): the next head with that block costs the request line's match
and a lookup, not llhttp, a Python call per field and the framing checks again. A block is
remembered only once llhttp and the strict checks took it, and the line is held to h11's
grammar here: so a line llhttp would refuse (``FOO``, ``get``) meeting a known block gets
the fields h11 would give it, and a block's verdict does not depend on its request line.
"""

from __future__ import annotations

import re
from typing import Any

import h11

from .events import BadRequest, Headers, Request

try:
    import httptools
except ImportError:  # pragma: no cover - the optional "speed" extra
    httptools = None  # type: ignore[assignment]

HAVE_HTTPTOOLS = httptools is not None
CL_MAX_DIGITS = 20  # h11's limit on a Content-Length value

# h11's grammar for the request line and the CRLF ending it, so a line llhttp takes is one
# h11 would take too (no field line holds a CR or LF, so this stops at the first CRLF).
_REQUEST_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n"
).match
_BLOCK_START = 5  # the block is keyed from the version's digits: "1.1\r\n" + field lines

# A parsed head: the request event, its Content-Length (-1: none) and these flag bits.
Head = tuple[Request, int, int]
CHUNKED = 1  # Transfer-Encoding: chunked
CLOSE = 2  # the client's last request on this connection
UPGRADE = 4  # a protocol switch proposal (h11: any Upgrade value)

# What a field block gives: the headers (lowercase names), the raw headers (wire names),
# the Content-Length, the flags, whether it expects 100-continue, and the version.
Fields = tuple[Headers, Headers, int, int, bool, str]

# Field blocks llhttp read -> what they gave. The key starts at the version's digits, which
# the framing depends on, and a hit is the very bytes that gave the entry. Bounded: a
# longer block (cookies, tokens) is read every time, and a full table starts afresh.
_KNOWN: dict[bytes, Fields] = {}
_KNOWN_MAX = 128
_KNOWN_BLOCK_MAX = 2048


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


def _fields(pairs: Headers, version: str, strict: bool) -> Fields | None:
    """What (wire name, value) pairs give; None: not plain enough for llhttp's word.

    ``strict`` (llhttp's pairs) refuses what h11 must judge: several Host or Content-Length
    fields, a Transfer-Encoding other than one ``chunked``, Content-Length next to it.
    h11's pairs are already judged and normalised.
    """
    headers: Headers = []
    raw: Headers = []
    length = -1
    flags = 0 if version == "1.1" else CLOSE
    expects_continue = False
    hosts = 0
    for name, value in pairs:
        if value and value[-1] in (9, 32):  # llhttp keeps trailing whitespace
            value = value.rstrip(b" \t")
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"content-length":
            if strict and (length != -1 or not value.isdigit() or len(value) > CL_MAX_DIGITS):
                return None
            length = int(value)
        elif lname == b"transfer-encoding":
            if strict and (flags & CHUNKED or value.lower() != b"chunked"):
                return None
            flags |= CHUNKED
            value = b"chunked"  # h11 passes it on lowercased
        elif lname == b"connection":
            tokens = [t.strip() for t in value.lower().split(b",")]
            if b"close" in tokens:
                flags |= CLOSE
        elif lname == b"upgrade" and value.strip(b" \t,"):
            flags |= UPGRADE
        elif lname == b"expect" and value.lower() == b"100-continue":
            expects_continue = version == "1.1"
        headers.append((lname, value))
        raw.append((name, value))
    if strict:
        if flags & CHUNKED and length != -1:
            return None
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            return None
    return headers, raw, length, flags, expects_continue, version


def _read_block(head: bytes, version: bytes, block: bytes) -> Fields | None:
    """llhttp's reading of a head whose field block is not known yet (then it is)."""
    pairs = _llhttp_headers(head)
    if pairs is None:
        return None
    fields = _fields(pairs, version.decode("ascii"), strict=True)
    if fields is not None and len(block) <= _KNOWN_BLOCK_MAX:
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[block] = fields
    return fields


def _h11_head(head: bytes) -> Head | BadRequest:
    """h11's verdict on a head llhttp refused or that is not plain."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        event: Any = conn.next_event()
    except h11.RemoteProtocolError as exc:
        return BadRequest(exc.error_status_hint, str(exc) or "invalid request")
    if type(event) is not h11.Request:  # pragma: no cover - a whole head was given
        return BadRequest(400, "invalid request head")
    version = event.http_version.decode("ascii")
    fields = _fields(list(event.headers.raw_items()), version, strict=False)
    assert fields is not None  # (not strict)
    return _request(event.method, event.target, fields)


def _request(method: bytes, target: bytes, fields: Fields) -> Head:
    """The request event (with lists of its own: an app may change its headers)."""
    headers, raw, length, flags, expects_continue, version = fields
    request = Request(method, target, headers.copy(), version, raw.copy(), expects_continue)
    return request, length, flags


def parse_head(head: bytes) -> Head | BadRequest:
    """A whole head (up to its empty line): the request and its framing, or h11's refusal."""
    if httptools is not None:
        line = _REQUEST_LINE(head)
        if line is not None:
            method, target, version = line.groups()
            block = head[line.end() - _BLOCK_START :]
            fields = _KNOWN.get(block)
            if fields is None:
                fields = _read_block(head, version, block)
            if fields is not None:
                return _request(method, target, fields)
    return _h11_head(head)
