"""HTTP11Protocol without sockets: framing, the checks h11 lacks, and chunking invariance.

Every protocol test runs for both classes: h11's and the httptools one (http = "httptools").
"""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioserve.sansio.events import (
    NEED_DATA,
    PAUSED,
    BadRequest,
    ConnectionClosed,
    Data,
    EndData,
    InformationalResponse,
    ProtocolError,
    Request,
    Response,
)
from trioserve.sansio.http11 import ChunkValidator, HTTP11Protocol
from trioserve.sansio.http11_fast import FastHTTP11Protocol
from trioserve.sansio.http11_rules import REASONS, error_response

PROTOCOLS = pytest.mark.parametrize(
    "cls", [HTTP11Protocol, FastHTTP11Protocol], ids=["h11", "httptools"]
)


def drain(proto: HTTP11Protocol) -> list[Any]:
    out: list[Any] = []
    while True:
        event = proto.next_event()
        if event is NEED_DATA or event is PAUSED:
            return out
        out.append(event)
        if isinstance(event, (BadRequest, ConnectionClosed)):
            return out


def events_for(cls: type[HTTP11Protocol], raw: bytes, **kwargs: Any) -> list[Any]:
    proto = cls(**kwargs)
    proto.receive_data(raw)
    return drain(proto)


@PROTOCOLS
def test_simple_get(cls: type[HTTP11Protocol]) -> None:
    [request, end] = events_for(cls, b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: z\r\n\r\n")
    assert isinstance(request, Request)
    assert request.method == b"GET"
    assert request.target == b"/a?b=1"
    assert request.http_version == "1.1"
    assert (b"x-y", b"z") in request.headers
    assert request.raw_headers is not None and (b"X-Y", b"z") in request.raw_headers
    assert isinstance(end, EndData)


@PROTOCOLS
def test_content_length_body(cls: type[HTTP11Protocol]) -> None:
    events = events_for(cls, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert [type(e) for e in events] == [Request, Data, EndData]
    assert events[1].data == b"hello"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 \r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
)
@PROTOCOLS
def test_refused_requests(cls: type[HTTP11Protocol], raw: bytes, status: int) -> None:
    events = events_for(cls, raw)
    assert isinstance(events[-1], BadRequest), events
    assert events[-1].status == status


@PROTOCOLS
def test_absolute_form_and_options_star_are_accepted(cls: type[HTTP11Protocol]) -> None:
    [req, _] = events_for(cls, b"GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert req.target == b"http://example.com/p?q"
    [req, _] = events_for(cls, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req.target == b"*"


@PROTOCOLS
def test_content_length_with_transfer_encoding_closes_after_response(
    cls: type[HTTP11Protocol],
) -> None:
    proto = cls()
    proto.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    )
    assert [type(e) for e in drain(proto)] == [Request, EndData]
    head = proto.send(Response(200, [(b"content-length", b"0")]))
    assert b"connection: close" in head.lower()
    proto.send(EndData())
    assert not proto.keep_alive


@PROTOCOLS
def test_head_size_limit_is_the_same_in_one_read_or_many(cls: type[HTTP11Protocol]) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    whole = events_for(cls, raw, max_head_size=1024)
    assert isinstance(whole[-1], BadRequest) and whole[-1].status == 431
    proto = cls(max_head_size=1024)
    result: list[Any] = []
    for i in range(len(raw)):
        proto.receive_data(raw[i : i + 1])
        result = drain(proto)
        if result:
            break
    assert isinstance(result[-1], BadRequest) and result[-1].status == 431


@PROTOCOLS
def test_pipelined_request_waits_for_the_response(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in drain(proto)] == [Request, EndData]
    assert proto.next_event() is PAUSED
    proto.send(Response(200, [(b"content-length", b"0")]))
    proto.send(EndData())
    assert proto.keep_alive
    proto.start_next_cycle()
    [second, _] = drain(proto)
    assert second.target == b"/2"


@PROTOCOLS
@pytest.mark.parametrize("empty", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_one_empty_line_before_each_request_line_is_ignored(
    cls: type[HTTP11Protocol], empty: bytes
) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request line
    (an old client's CRLF after a POST body precedes its next request); the allowance is
    per request, so it holds again after a keep-alive cycle."""
    proto = cls()
    proto.receive_data(
        empty
        + b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
        + empty
        + b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first, body, end = drain(proto)
    assert (first.target, body.data, type(end)) == (b"/1", b"ab", EndData)
    proto.send(Response(200, [(b"content-length", b"0")]))
    proto.send(EndData())
    proto.start_next_cycle()
    second, _ = drain(proto)
    assert isinstance(second, Request) and second.target == b"/2"


@PROTOCOLS
@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["two-crlf", "two-lf", "crlf-lf", "bare-cr", "crlf-space"],
)
def test_more_than_one_empty_line_is_an_empty_request_line(
    cls: type[HTTP11Protocol], raw: bytes
) -> None:
    [refused] = feed_in_pieces(cls, raw, [])
    assert isinstance(refused, BadRequest) and refused.status == 400
    # (h11's words depend on how much it saw; the verdict does not)
    assert verdict(feed_in_pieces(cls, raw, list(range(len(raw))))) == [("refused", 400)]


@PROTOCOLS
def test_a_cr_alone_waits_for_what_follows(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"\r")
    assert proto.next_event() is NEED_DATA  # may still be an empty line
    proto.receive_data(b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(proto.next_event(), Request)


@PROTOCOLS
def test_push_back_returns_the_peeked_event_first(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert isinstance(proto.next_event(), Request)
    data = proto.next_event()
    proto.push_back(data)
    assert proto.next_event() is data
    assert isinstance(proto.next_event(), EndData)


def answer(proto: HTTP11Protocol) -> None:
    proto.send(Response(200, [(b"content-length", b"0")]))
    proto.send(EndData())


@PROTOCOLS
def test_next_cycle_drops_a_buffered_body_and_starts_the_next_request(
    cls: type[HTTP11Protocol],
) -> None:
    proto = cls()
    proto.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert isinstance(proto.next_event(), Request)
    assert not proto.next_cycle()  # no response yet
    answer(proto)
    assert proto.next_cycle()
    [request, end] = drain(proto)
    assert request.target == b"/2" and isinstance(end, EndData)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",  # body not here
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["unread-body", "close", "http10", "bad-chunk"],
)
@PROTOCOLS
def test_next_cycle_leaves_what_keep_alive_cannot_carry(
    cls: type[HTTP11Protocol], raw: bytes
) -> None:
    proto = cls()
    proto.receive_data(raw)
    assert isinstance(proto.next_event(), Request)
    answer(proto)
    assert not proto.next_cycle()
    assert not proto.keep_alive


@PROTOCOLS
def test_next_cycle_after_close_after_response(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(proto.next_event(), Request)
    proto.close_after_response()
    answer(proto)
    assert not proto.next_cycle()


@PROTOCOLS
def test_http10_closes_after_response(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    [req, _] = drain(proto)
    assert req.http_version == "1.0"
    proto.send(Response(200, [(b"content-length", b"0")]))
    proto.send(EndData())
    assert not proto.keep_alive


@PROTOCOLS
def test_response_status_line_has_reason_phrase(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(proto)
    assert proto.send(Response(404, [])).startswith(b"HTTP/1.1 404 Not Found\r\n")


@PROTOCOLS
def test_expect_continue_is_flagged_for_http11_only(cls: type[HTTP11Protocol]) -> None:
    [req, *_] = events_for(
        cls, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert req.expects_continue


def test_error_response_is_complete_and_closes() -> None:
    raw = error_response(431)
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"connection: close" in head
    assert f"content-length: {len(body)}".encode() in head


# -- chunk validator ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"5\r\nhello\r\n0\r\n\r\n", b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", b"0\r\n\r\n"],
)
def test_chunk_validator_accepts_valid_bodies(body: bytes) -> None:
    validator = ChunkValidator()
    assert validator.feed(body) is None
    assert validator.done


@pytest.mark.parametrize(
    "body",
    [b"0 \r\n\r\n", b"5\nhello\r\n", b"x\r\n", b"5\r\nhelloXX\r\n", b"1;a\rb\r\nx\r\n", b"\r\n"],
)
def test_chunk_validator_rejects_bad_framing(body: bytes) -> None:
    assert ChunkValidator().feed(body) is not None


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=6), st.data())
def test_chunk_validator_is_chunking_invariant(chunks: list[bytes], data: st.DataObject) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    validator = ChunkValidator()
    prev = 0
    for cut in [*cuts, len(body)]:
        assert validator.feed(body[max(prev, 0) : max(cut, prev)]) is None
        prev = cut
    assert validator.done


# -- any chunking of the same bytes gives the same events ---------------------------------

REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4;e=1\r\ndefg\r\n0\r\nT: 1\r\n\r\n",
    b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 300 + b"\r\n\r\n",
    b"\r\nGET /lead HTTP/1.1\r\nHost: x\r\n\r\n",  # one empty line first: ignored
    b"\nPOST /lead HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab",
]


def normalise(events: list[Any]) -> list[Any]:
    """Merge adjacent Data events: chunking may split body data differently.

    A refused body is judged by its verdict: how much of it was passed on before the
    framing error depends on where reads ended, the head and the refusal do not.
    """
    if events and isinstance(events[-1], BadRequest):
        events = [e for e in events if not isinstance(e, Data)]
    out: list[Any] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def feed_in_pieces(cls: type[HTTP11Protocol], raw: bytes, cuts: list[int]) -> list[Any]:
    proto = cls(max_head_size=256)
    events: list[Any] = []
    prev = 0
    for cut in [*sorted(cuts), len(raw)]:
        piece = raw[prev:cut]
        prev = cut
        if not piece:  # b"" means end of input, not "nothing yet"
            continue
        proto.receive_data(piece)
        events.extend(drain(proto))
        if events and isinstance(events[-1], BadRequest):
            break
    return normalise(events)


@settings(max_examples=200)
@given(st.sampled_from(REQUESTS), st.data())
@PROTOCOLS
def test_any_chunking_gives_the_same_events(
    cls: type[HTTP11Protocol], raw: bytes, data: st.DataObject
) -> None:
    whole = feed_in_pieces(cls, raw, [])
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert feed_in_pieces(cls, raw, cuts) == whole


@PROTOCOLS
def test_byte_by_byte_matches_whole(cls: type[HTTP11Protocol]) -> None:
    for raw in REQUESTS:
        assert feed_in_pieces(cls, raw, list(range(len(raw)))) == feed_in_pieces(cls, raw, [])


# -- the httptools class gives h11's verdicts -----------------------------------------------

ODD_REQUESTS = [
    b"FOO /x HTTP/1.1\r\nHost: x\r\n\r\n",  # a method llhttp does not know
    b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",  # obs-fold
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\nabcdefg",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\nFOO / HTTP/1.1\r\nHost: x\r\n\r\n",  # h11 judges the head after the line
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na\r\n"
    b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    b" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /café HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX:  padded \t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: \xe9\r\n\r\n",
    b"GET / HTTP/1.12\r\nHost: x\r\n\r\n",
    b"GET / http/1.1\r\nHost: x\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nT: ok\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
]


def verdict(events: list[Any]) -> list[Any]:
    """Events to compare across classes: a refusal by its status (the words differ)."""
    return [("refused", e.status) if isinstance(e, BadRequest) else e for e in events]


@pytest.mark.parametrize("raw", ODD_REQUESTS)
@pytest.mark.parametrize("eof", [False, True], ids=["open", "eof"])
def test_httptools_class_gives_h11s_verdicts(raw: bytes, eof: bool) -> None:
    results = []
    for cls in (HTTP11Protocol, FastHTTP11Protocol):
        proto = cls()
        proto.receive_data(raw)
        if eof:
            proto.receive_data(b"")
        results.append((verdict(normalise(drain(proto))), proto.must_close, proto.idle))
    assert results[0] == results[1]


@pytest.mark.parametrize("raw", ODD_REQUESTS)
def test_httptools_class_is_chunking_invariant_on_odd_requests(raw: bytes) -> None:
    whole = verdict(feed_in_pieces(FastHTTP11Protocol, raw, []))
    assert verdict(feed_in_pieces(FastHTTP11Protocol, raw, list(range(len(raw))))) == whole


@settings(max_examples=100)
@given(st.sampled_from(REQUESTS + ODD_REQUESTS), st.data())
def test_httptools_class_matches_h11_under_any_chunking(raw: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    fast = verdict(feed_in_pieces(FastHTTP11Protocol, raw, cuts))
    assert fast == verdict(feed_in_pieces(HTTP11Protocol, raw, cuts))


RESPONSES: list[tuple[bytes, int, list[tuple[bytes, bytes]], list[bytes]]] = [
    (b"GET", 200, [(b"content-length", b"5")], [b"hello"]),
    (b"GET", 200, [(b"content-type", b"text/plain")], [b"hel", b"", b"lo"]),
    (b"HEAD", 200, [(b"content-length", b"5")], []),
    (b"HEAD", 200, [], []),
    (b"GET", 204, [], []),
    (b"GET", 304, [(b"etag", b'"x"')], []),
    (b"GET", 200, [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], [b"abc"]),
    (b"GET", 200, [(b"connection", b"close"), (b"content-length", b"0")], []),
    (b"GET", 200, [(b"connection", b"keep-alive, x"), (b"content-length", b"0")], []),
    (b"GET", 200, [(b"content-length", b"2, 2")], [b"ab"]),
    (b"GET", 599, [(b"content-length", b"0")], []),
]


def response_parts(raw: bytes) -> tuple[bytes, set[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = set()
    for line in lines:
        name, _, value = line.partition(b":")
        fields.add((name.lower(), value.strip()))
    return status, fields, body


def h11_writes(
    request: bytes, status: int, headers: list[Any], body: list[bytes], close: bool = False
) -> tuple[Any, bool, bool]:
    """What h11 itself writes (both our classes write responses with ResponseSide), and
    whether it would keep the connection and call the response complete."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    while type(conn.next_event()) is not h11.EndOfMessage:
        pass
    if close:  # as close_after_response(): our own close after the app's fields
        headers = [*headers, (b"connection", b"close")]
    reason = REASONS.get(status, b"")
    raw = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
    raw += b"".join(conn.send(h11.Data(data=piece)) or b"" for piece in body)
    raw += conn.send(h11.EndOfMessage()) or b""
    done = conn.our_state is h11.DONE
    return response_parts(raw), done and conn.their_state is h11.DONE, done


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize(("method", "status", "headers", "body"), RESPONSES)
@PROTOCOLS
def test_responses_are_what_h11_writes(
    cls: type[HTTP11Protocol],
    version: bytes,
    method: bytes,
    status: int,
    headers: list[Any],
    body: list[bytes],
) -> None:
    request = b"%s / HTTP/%s\r\nHost: x\r\n\r\n" % (method, version)
    proto = cls()
    proto.receive_data(request)
    drain(proto)
    raw = proto.send(Response(status, list(headers)))
    raw += b"".join(proto.send(Data(piece)) for piece in body)
    raw += proto.send(EndData())
    ours = (response_parts(raw), proto.keep_alive, proto.response_complete)
    assert ours == h11_writes(request, status, list(headers), body)


@pytest.mark.parametrize("status", [200, 204, 304])
@pytest.mark.parametrize("close", [False, True], ids=["keep", "close"])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_head_written_before_is_framed_for_the_request_at_hand(
    method: bytes, version: bytes, close: bool, status: int
) -> None:
    """The httptools class remembers the heads it wrote (for every connection): the same
    fields again, on a request that is framed differently, are still written as h11 would."""
    headers = [
        (b"content-length", b"5"),
        (b"x-case", b"%s-%s-%d-%d" % (method, version, close, status)),
    ]
    first = FastHTTP11Protocol()  # a keep-alive GET writes the head first
    first.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(first)
    first.send(Response(status, list(headers)))
    request = b"%s / HTTP/%s\r\nHost: x\r\n\r\n" % (method, version)
    body = [b"hello"] if method == b"GET" and status == 200 else []
    proto = FastHTTP11Protocol()
    proto.receive_data(request)
    drain(proto)
    if close:
        proto.close_after_response()
    raw = proto.send(Response(status, list(headers)))
    raw += b"".join(proto.send(Data(piece)) for piece in body)
    raw += proto.send(EndData())
    ours = (response_parts(raw), proto.keep_alive, proto.response_complete)
    assert ours == h11_writes(request, status, list(headers), body, close)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([(b"content-length", b"2")], [b"abc"]),
        ([(b"content-length", b"5")], [b"abc"]),
        ([(b"content-length", b"x")], []),
        ([(b"content-length", b"1"), (b"content-length", b"2")], []),
        ([(b"transfer-encoding", b"gzip")], []),
    ],
)
@PROTOCOLS
def test_response_framing_misuse_raises(
    cls: type[HTTP11Protocol], headers: list[Any], body: list[bytes]
) -> None:
    proto = cls()
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(proto)
    with pytest.raises(ProtocolError):  # our own type, whichever parser
        proto.send(Response(200, headers))
        for piece in body:
            proto.send(Data(piece))
        proto.send(EndData())


@PROTOCOLS
def test_upgrade_leaves_the_following_bytes_for_the_new_protocol(
    cls: type[HTTP11Protocol],
) -> None:
    proto = cls()
    proto.receive_data(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    )
    assert isinstance(proto.next_event(), Request)
    assert proto.take_trailing_data() == b"\x81\x00"


@PROTOCOLS
def test_informational_response_then_response(cls: type[HTTP11Protocol]) -> None:
    proto = cls()
    proto.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert isinstance(proto.next_event(), Request)
    assert proto.send(InformationalResponse(100, [])) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not proto.response_started
    proto.send(Response(200, [(b"content-length", b"0")]))
    assert proto.response_started


@pytest.fixture
def _force_http_parser() -> None:
    """Overrides the conftest fixture that forces one parser (TRIOSERVE_TEST_HTTP) for the
    test below, which checks which class each setting picks."""


def test_http_setting_picks_the_class() -> None:
    from trioserve.config import ConfigError
    from trioserve.run import make_config
    from trioserve.sansio.http11_choice import make_http11_protocol, protocol_class

    assert make_config(environ={}).http == "auto"  # httptools when installed, as in Uvicorn
    assert protocol_class("h11") is HTTP11Protocol
    assert protocol_class("httptools") is FastHTTP11Protocol
    assert protocol_class("auto") is FastHTTP11Protocol  # httptools is installed for the tests
    assert make_config(environ={"TRIOSERVE_HTTP": "httptools"}).http == "httptools"
    with pytest.raises(ConfigError, match="one of auto, h11, httptools, got 'HTTPTOOLS'"):
        make_config(environ={"TRIOSERVE_HTTP": "HTTPTOOLS"})  # case-sensitive, as Uvicorn
    with pytest.raises(ConfigError, match="one of auto, h11, httptools"):
        make_config(environ={}, http="llhttp")
    proto = make_http11_protocol("httptools", max_head_size=100)
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100 + b"\r\n\r\n")
    event = proto.next_event()
    assert isinstance(event, BadRequest) and event.status == 431


# Fragments of heads, many of them wrong, for comparing the two classes on random mixes.
HEAD_LINES = [
    b"GET / HTTP/1.1",
    b"POST /p?q HTTP/1.1",
    b"HEAD / HTTP/1.0",
    b"FOO / HTTP/1.1",
    b"GET / HTTP/1.2",
    b"GET  / HTTP/1.1",
    b"GET /\x80 HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"get / HTTP/1.1",
    b"GET http://a/b HTTP/1.1",
    b"M-SEARCH * HTTP/1.1",
]
HEAD_FIELDS = [
    b"Host: x",
    b"Host: y",
    b"host:x",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Content-Length: 3, 3",
    b"Content-Length: 03",
    b"Content-Length: -1",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: CHUNKED",
    b"Transfer-Encoding: identity",
    b"Transfer-Encoding: chunked, chunked",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b" folded",
    b"X: a\x00b",
    b"X: \x80\xff",
    b"X:",
    b"X :y",
    b"X: y\t",
    b": v",
    b"X",
    b"X: a\x7f",
    b"X: a\x1fb",
    b"[x]: y",
]
BODIES = [b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n", b"3\r\nab", b"x\r\n"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(HEAD_LINES),
    st.lists(st.sampled_from(HEAD_FIELDS), max_size=5),
    st.sampled_from(BODIES),
    st.sampled_from([b"\r\n", b"\n"]),
    st.booleans(),
)
def test_httptools_class_matches_h11_on_random_heads(
    line: bytes, fields: list[bytes], body: bytes, newline: bytes, eof: bool
) -> None:
    raw = newline.join([line, *fields]) + newline + newline + body
    results = []
    for cls in (HTTP11Protocol, FastHTTP11Protocol):
        proto = cls()
        proto.receive_data(raw)
        if eof:
            proto.receive_data(b"")
        results.append((verdict(normalise(drain(proto))), proto.must_close))
    assert results[0] == results[1]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("size", [10, 70_000], ids=["small", "large"])
@PROTOCOLS
def test_frame_writes_what_send_writes_and_never_copies_a_large_body(
    cls: type[HTTP11Protocol], framing: str, size: int
) -> None:
    """``frame()`` is ``send()`` per event in one call; a large body piece stays the app's
    own object in the list it returns (a gather write), on either framing."""
    body = b"x" * size
    headers = [(b"content-length", b"%d" % size)] if framing == "length" else []
    written = {}
    for how in ("send", "frame"):
        proto = cls()
        proto.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        drain(proto)
        events = [Response(200, list(headers)), Data(body), EndData()]
        if how == "send":
            written[how] = b"".join(proto.send(event) for event in events)
            continue
        framed = proto.frame(events, 64 * 1024)
        if size < 64 * 1024:
            assert type(framed) is bytes
        else:
            assert type(framed) is list and any(piece is body for piece in framed)
        written[how] = framed if type(framed) is bytes else b"".join(framed)
        assert proto.response_complete
    assert written["frame"] == written["send"]


# -- a field block read once is remembered (http11_head._KNOWN) ----------------------------

REMEMBERED_BLOCKS = [
    b"Host: x\r\n\r\n",
    b"\r\n",
    b"Host: x\r\nContent-Length: 3\r\n\r\nabc",
    b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Host: x\r\nConnection: close\r\n\r\n",
    b"Host: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    b"Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]


@pytest.mark.parametrize("block", REMEMBERED_BLOCKS)
def test_a_remembered_field_block_gives_h11s_verdict_under_any_request_line(block: bytes) -> None:
    """The block is remembered under one request line and met again under another, one
    that llhttp refuses included: the verdict is still h11's for the head at hand."""
    for first in HEAD_LINES:
        events_for(FastHTTP11Protocol, first + b"\r\n" + block)
        for line in HEAD_LINES:
            raw = line + b"\r\n" + block
            results = []
            for cls in (HTTP11Protocol, FastHTTP11Protocol):
                proto = cls()
                proto.receive_data(raw)
                results.append((verdict(normalise(drain(proto))), proto.must_close))
            assert results[0] == results[1], (first, line)


def test_each_request_has_header_lists_of_its_own() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n\r\n"
    first = events_for(FastHTTP11Protocol, raw)[0]
    first.headers.append((b"x-app", b"added"))
    first.raw_headers.clear()
    second = events_for(FastHTTP11Protocol, raw)[0]
    assert second.headers == [(b"host", b"x"), (b"x", b"1")]
    assert second.raw_headers == [(b"Host", b"x"), (b"X", b"1")]
