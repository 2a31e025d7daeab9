"""One set of request rules for every HTTP version (issues 22 and 23): HTTP/2's and
HTTP/3's pseudo-headers go through the same function, and its method/target verdicts are
the ones HTTP/1.1's request line gets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.malformed_heads import cases
from trioserve.sansio.events import BadRequest, Request
from trioserve.sansio.http11_rules import check_request
from trioserve.sansio.streams import malformed_trailers, request_from_fields


def head(method: bytes, path: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    base = [(b":method", method), (b":scheme", b"https"), (b":authority", b"ex.com")]
    return [*base, (b":path", path), *extra]


@pytest.mark.parametrize("version", ["2", "3"])
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        (b"GET", b"admin", 400),
        (b"G\xc3\x89T", b"/", 400),
        (b"GET", b"/a b", 400),
        (b"GET", b"/a\x01", 400),
        (b"GET", b"/a\x7f", 400),
        (b"GET /admin HTTP/1.1", b"/", 400),
        (b"GET", b"*", 400),
        (b"GET", b"http://ex.com/", 400),  # absolute-form is HTTP/1.x only
        (b"OPTIONS", b"*", 0),
        (b"PATCH", b"/a?b=c", 0),
    ],
)
def test_same_verdicts_on_http2_and_http3(
    version: str, method: bytes, path: bytes, status: int
) -> None:
    result = request_from_fields(head(method, path), version)
    if status:
        assert isinstance(result, BadRequest) and result.status == status
    else:
        assert isinstance(result, Request) and result.http_version == version


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"GET", b"/a b", 400),
        (b"GET /x HTTP/1.1", b"/", 400),
        (b"GET", b"*", 400),
        (b"OPTIONS", b"*", None),
        (b"GET", b"http://ex.com/p", None),
    ],
)
def test_http11_request_line_gets_the_same_verdicts(
    method: bytes, target: bytes, status: int | None
) -> None:
    result = check_request(method, target, "1.1", 10, 1000)
    assert (result.status if result else None) == status


@pytest.mark.parametrize("version", ["2", "3"])
def test_authority_wins_and_a_disagreeing_host_is_malformed(version: str) -> None:
    same = request_from_fields(head(b"GET", b"/", (b"host", b"ex.com")), version)
    assert isinstance(same, Request)
    assert [v for n, v in same.headers if n == b"host"] == [b"ex.com"]
    other = request_from_fields(head(b"GET", b"/", (b"host", b"evil.com")), version)
    assert isinstance(other, BadRequest) and other.status == 400
    no_authority = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
    kept = request_from_fields([*no_authority, (b"host", b"h.com")], version)
    assert isinstance(kept, Request) and kept.headers == [(b"host", b"h.com")]


@pytest.mark.parametrize("version", ["2", "3"])
def test_expect_continue_and_connection_fields(version: str) -> None:
    request = request_from_fields(head(b"POST", b"/", (b"expect", b"100-Continue")), version)
    assert isinstance(request, Request) and request.expects_continue
    refused = request_from_fields(head(b"GET", b"/", (b"connection", b"close")), version)
    assert isinstance(refused, BadRequest) and refused.status == 400


@pytest.mark.parametrize("name", list(cases(b"https")))
def test_every_malformed_head_is_a_400(name: str) -> None:
    result = request_from_fields(cases(b"https")[name], "2")
    assert isinstance(result, BadRequest) and result.status == 400, result


_field = st.tuples(
    st.sampled_from([b":method", b":path", b":scheme", b":authority", b":protocol", b"host"])
    | st.binary(max_size=8),
    st.sampled_from([b"GET", b"CONNECT", b"/", b"", b"https", b"websocket"])
    | st.binary(max_size=8),
)


@given(st.lists(_field, max_size=8))
@settings(max_examples=500, deadline=None)
def test_any_head_is_a_request_or_a_refusal_never_an_exception(fields: Any) -> None:
    """What h2 and aioquic no longer check must not raise here either (a traceback, and
    on HTTP/2 a dead connection): every head is served or refused."""
    assert isinstance(request_from_fields(fields, "3"), (Request, BadRequest))
    malformed_trailers(fields)
