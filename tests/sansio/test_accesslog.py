"""Access-log atoms, as Hypercorn and gunicorn define them."""

from __future__ import annotations

from typing import Any

from trioserve.sansio.accesslog import AccessLogAtoms, format_access_line

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "POST",
    "scheme": "https",
    "path": "/items",
    "query_string": b"a=1",
    "client": ("10.0.0.7", 5555),
    "headers": [
        (b"user-agent", b"curl/8"),
        (b"referer", b"https://r.example/"),
        (b"x-request-id", b"abc"),
    ],
}


def atoms(**kwargs: Any) -> AccessLogAtoms:
    values: dict[str, Any] = {
        "status": 201,
        "response_headers": [(b"content-type", b"application/json")],
        "bytes_sent": 42,
        "duration": 0.0123,
        "end": 0.0,
    }
    values.update(kwargs)
    return AccessLogAtoms(SCOPE, **values)


def test_common_atoms() -> None:
    line = format_access_line(
        '%(h)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s %(S)s', atoms()
    )
    assert line == (
        '10.0.0.7 "POST /items?a=1 HTTP/1.1" 201 42 "https://r.example/" "curl/8" '
        "POST /items a=1 HTTP/1.1 https"
    )


def test_timing_atoms() -> None:
    a = atoms()
    assert a["T"] == "0"
    assert a["D"] == "12300"
    assert a["M"] == "12"
    assert a["L"] == "0.012300"
    assert a["t"].startswith("[") and a["t"].endswith("]")


def test_header_and_environment_atoms(monkeypatch: Any) -> None:
    monkeypatch.setenv("TRIOSERVE_TEST_VAR", "on")
    line = format_access_line(
        "%({x-request-id}i)s %({Content-Type}o)s %({TRIOSERVE_TEST_VAR}e)s %({missing}i)s",
        atoms(),
    )
    assert line == "abc application/json on -"


def test_b_is_dash_for_empty_bodies_and_B_is_zero() -> None:
    a = atoms(bytes_sent=0)
    assert (a["b"], a["B"]) == ("-", "0")


def test_unknown_atom_renders_dash_instead_of_losing_the_line() -> None:
    assert format_access_line("%(h)s %(nope)s", atoms()) == "10.0.0.7 -"


def test_status_phrase_and_websocket_protocol() -> None:
    assert atoms()["st"] == "Created"
    ws = AccessLogAtoms({**SCOPE, "type": "websocket"}, 101, None, 0, 1.0, 0.0)
    assert ws["H"] == "WS/1.1"


def test_x_atom_says_whether_the_exchange_was_cut() -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "http_version": "1.1"}
    whole = AccessLogAtoms(scope, 200, [], 2, 0.1, 0.0)
    cut = AccessLogAtoms(scope, 200, [], 2, 0.1, 0.0, complete=False)
    assert format_access_line("%(s)s %(X)s", whole) == "200 +"
    assert format_access_line("%(s)s %(X)s", cut) == "200 X"


def test_request_line_is_the_target_as_received() -> None:
    """With root_path the scope's path is longer than what the client sent (issue 11)."""
    scope = {
        **SCOPE,
        "path": "/api/api/x",
        "raw_path": b"/api/api/x",
        "root_path": "/api",
        "query_string": b"q=1",
    }
    given = AccessLogAtoms(scope, 200, None, 0, 0.0, 0.0, b"/api/x?q=1")
    assert format_access_line("%(r)s", given) == "POST /api/x?q=1 HTTP/1.1"
    # Without the target (a WebSocket line): the raw path, root_path taken off.
    derived = AccessLogAtoms(scope, 101, None, 0, 0.0, 0.0)
    assert format_access_line("%(r)s", derived) == "POST /api/x?q=1 HTTP/1.1"
