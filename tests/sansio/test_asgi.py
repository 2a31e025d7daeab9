"""The ASGI layer without sockets: scopes, and checking the app's response messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioserve.sansio.asgi import (
    BODY,
    DONE,
    HTTPResponseCycle,
    UnexpectedMessage,
    build_http_scope,
    checked_headers,
    split_target,
)
from trioserve.sansio.events import Data, EndData, Request, Response
from trioserve.sansio.headers import DateHeader, InvalidHeader, validate_response_headers


def request(target: bytes = b"/", method: bytes = b"GET") -> Request:
    return Request(
        method=method,
        target=target,
        headers=[(b"host", b"example.com")],
        http_version="1.1",
        raw_headers=[(b"Host", b"example.com")],
    )


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2"),
        (b"/", b"/", b""),
        (b"/?", b"/", b""),
        (b"http://example.com/p?q=1", b"/p", b"q=1"),
        (b"http://example.com", b"/", b""),
        (b"https://example.com:8443?q", b"/", b"q"),
        (b"*", b"*", b""),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


def test_http_scope() -> None:
    state = {"db": object()}
    scope = build_http_scope(
        request(b"/caf%C3%A9/x%2Fy?q=%20"),
        scheme="http",
        client=("127.0.0.1", 5000),
        server=("127.0.0.1", 8000),
        root_path="",
        state=state,
    )
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["path"] == "/café/x/y"
    assert scope["raw_path"] == b"/caf%C3%A9/x%2Fy"
    assert scope["query_string"] == b"q=%20"
    assert scope["headers"] == [(b"host", b"example.com")]
    assert scope["client"] == ("127.0.0.1", 5000)
    assert scope["state"] == state and scope["state"] is not state


@pytest.mark.parametrize(
    ("method", "target", "path", "query"),
    [
        (b"GET", "/café?q=é".encode(), "/café", "q=é".encode()),  # raw UTF-8, unescaped
        (b"PROPFIND", b"/\xff/a?b", "/\ufffd/a", b"b"),  # not UTF-8: replaced
        (b"M-SEARCH", b"http://h/%41/x?y", "/A/x", b"y"),  # absolute-form, escaped
        (b"OPTIONS", b"*", "*", b""),
    ],
)
def test_scope_path_and_method_text(method: bytes, target: bytes, path: str, query: bytes) -> None:
    scope = build_http_scope(
        request(target, method),
        scheme="http",
        client=None,
        server=None,
        root_path="",
        state=None,
    )
    assert (scope["method"], scope["path"], scope["query_string"]) == (
        method.decode(),
        path,
        query,
    )


def test_root_path_prefixes_path_and_raw_path() -> None:
    scope = build_http_scope(
        request(b"/items"),
        scheme="https",
        client=None,
        server=None,
        root_path="/api",
        state=None,
    )
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == (
        "/api",
        "/api/items",
        b"/api/items",
    )
    assert "state" not in scope
    assert scope["scheme"] == "https"


def test_raw_header_case_is_passed_when_asked() -> None:
    scope = build_http_scope(
        request(),
        scheme="http",
        client=None,
        server=None,
        root_path="",
        state=None,
        raw_header_case=True,
    )
    assert scope["headers"] == [(b"Host", b"example.com")]


def start(status: int = 200, headers: Any = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def test_head_is_held_until_the_first_body_and_sent_with_it() -> None:
    cycle = HTTPResponseCycle(is_head=False, default_headers=[(b"server", b"trioserve")])
    assert cycle.on_message(start(200, [(b"Content-Type", b"text/plain")])) == []
    assert cycle.started and cycle.state == BODY
    events = cycle.on_message(body(b"hi", more=True))
    assert events == [
        Response(200, [(b"content-type", b"text/plain"), (b"server", b"trioserve")]),
        Data(b"hi"),
    ]
    assert cycle.on_message(body(b"!")) == [Data(b"!"), EndData()]
    assert cycle.state == DONE
    assert cycle.bytes_sent == 3


def test_app_header_wins_over_default() -> None:
    cycle = HTTPResponseCycle(
        is_head=False, default_headers=[(b"server", b"trioserve"), (b"x-default", b"1")]
    )
    cycle.on_message(start(200, [(b"Server", b"mine")]))
    [response, _] = cycle.on_message(body())
    assert isinstance(response, Response)
    assert response.headers == [(b"server", b"mine"), (b"x-default", b"1")]


def test_head_request_sends_no_body() -> None:
    cycle = HTTPResponseCycle(is_head=True, default_headers=[])
    cycle.on_message(start(200, [(b"content-length", b"5")]))
    events = cycle.on_message(body(b"hello"))
    assert [type(e) for e in events] == [Response, EndData]


@pytest.mark.parametrize(
    "messages",
    [
        [body()],
        [start(), start()],
        [start(), body(), body()],
        [{"type": "http.response.trailers"}],
        [{"no": "type"}],
        [start(status=99)],
        [start(status="200")],  # type: ignore[arg-type]
        [start(status=101)],
        [start(headers=[(b"x", b"a\r\nb")])],
        [start(headers=[(b"bad name", b"v")])],
        [start(headers=[("str", "str")])],
        [start(headers=[(b"x",)])],
        [start(), {"type": "http.response.body", "body": "text"}],
    ],
)
def test_wrong_messages_are_refused(messages: list[dict[str, Any]]) -> None:
    cycle = HTTPResponseCycle(is_head=False, default_headers=[])
    with pytest.raises(UnexpectedMessage):
        for message in messages:
            cycle.on_message(message)


@given(st.binary(max_size=20), st.binary(max_size=40))
def test_header_validation_never_lets_line_breaks_through(name: bytes, value: bytes) -> None:
    try:
        [(checked_name, checked_value)] = validate_response_headers([(name, value)])
    except InvalidHeader:
        return
    for byte in (b"\r", b"\n", b"\x00"):
        assert byte not in checked_name and byte not in checked_value
    assert checked_name and b" " not in checked_name and b":" not in checked_name


_PAIRS = st.lists(
    st.tuples(
        st.sampled_from([b"Content-Type", b"x-a", b"bad name", b"", b"Set-Cookie"]),
        st.sampled_from([b"text/plain", b" padded ", b"a\r\nb", b"", b"x" * 150, b"\x00"]),
    ),
    max_size=4,
)


@given(_PAIRS)
def test_remembered_headers_check_as_the_first_time(pairs: list[tuple[bytes, bytes]]) -> None:
    """The second (and third) time a header block comes, the remembered pairs give what
    the full check gives, and a block it refuses is still refused."""
    try:
        expected: Any = validate_response_headers(pairs)
    except InvalidHeader:
        expected = InvalidHeader
    for _ in range(3):
        try:
            got: Any = checked_headers(list(pairs))
        except UnexpectedMessage:
            got = InvalidHeader
        assert got == expected


def test_remembered_pair_does_not_pass_a_different_value() -> None:
    cycle = HTTPResponseCycle(is_head=False, default_headers=[])
    cycle.on_message(start(200, [(b"X-Tag", b"ok")]))
    [response, _] = cycle.on_message(body())
    assert isinstance(response, Response) and response.headers == [(b"x-tag", b"ok")]
    for bad in ([(b"X-Tag", b"ok\r\nx: y")], [(b"X-Tag", b"ok"), (b"x tag", b"ok")]):
        with pytest.raises(UnexpectedMessage):
            HTTPResponseCycle(is_head=False, default_headers=[]).on_message(start(200, bad))
    # Pairs that are not tuples of bytes are checked (and converted) every time.
    for _ in range(2):
        cycle = HTTPResponseCycle(is_head=False, default_headers=[])
        cycle.on_message(start(200, [[b"X-Tag", bytearray(b"ok")]]))
        [response, _] = cycle.on_message(body())
        assert isinstance(response, Response) and response.headers == [(b"x-tag", b"ok")]


def test_date_header_is_formatted_once_per_second() -> None:
    date = DateHeader()
    first = date.value(1_700_000_000.1)
    assert first == b"Tue, 14 Nov 2023 22:13:20 GMT"
    assert date.value(1_700_000_000.9) is first
    assert date.value(1_700_000_001.0) != first


@pytest.mark.parametrize(
    ("length", "body", "more"),
    [(b"2", b"abc", True), (b"5", b"abc", False), (None, "text", False)],
)
def test_invalid_first_body_keeps_the_head_held(
    length: bytes | None, body: object, more: bool
) -> None:
    """A body the protocol layer would reject is refused while a 500 can still replace it."""
    cycle = HTTPResponseCycle(is_head=False, default_headers=[])
    headers = [(b"content-length", length)] if length else []
    cycle.on_message({"type": "http.response.start", "status": 200, "headers": headers})
    with pytest.raises(UnexpectedMessage):
        cycle.on_message({"type": "http.response.body", "body": body, "more_body": more})
    assert cycle.started
    # The head is still held: the 500 that replaces it is the first thing out.
    fitting = b"x" * int(length) if length else b""
    events = cycle.on_message({"type": "http.response.body", "body": fitting})
    assert type(events[0]) is Response
