"""Request ids: honoured or made, in the scope, the access log, JSON logs and the response."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioserve.logs import JSONFormatter
from trioserve.sansio.requestid import MAX_LENGTH, RequestIds
from trioserve.testing import open_server


async def echo_id(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = str(scope.get("request_id")).encode()
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_incoming_id_is_honoured_and_echoed_when_configured() -> None:
    async with (
        open_server(echo_id, request_id_response=True) as server,
        httpx.AsyncClient() as client,
    ):
        given_id = await client.get(server.url, headers={"X-Request-ID": "abc-123:x/y"})
        made = [await client.get(server.url) for _ in range(2)]
    assert given_id.text == "abc-123:x/y"
    assert given_id.headers["x-request-id"] == "abc-123:x/y"
    ids = [r.text for r in made]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert ids[0] != ids[1]
    assert [r.headers["x-request-id"] for r in made] == ids


@pytest.mark.parametrize(
    "bad",
    ["x" * (MAX_LENGTH + 1), "has space", 'quote"d', "new\\nline", "ünï", ""],
)
async def test_insane_incoming_ids_are_replaced(bad: str) -> None:
    async with open_server(echo_id) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url, headers={"X-Request-ID": bad.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.text)
    assert "x-request-id" not in response.headers  # not echoed unless configured


async def test_header_name_is_configurable_and_empty_turns_ids_off() -> None:
    async with (
        open_server(echo_id, request_id_header="X-Correlation-ID") as server,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(server.url, headers={"X-Correlation-ID": "corr-1"})
        ignored = await client.get(server.url, headers={"X-Request-ID": "req-1"})
    assert response.text == "corr-1"
    assert ignored.text != "req-1"
    async with open_server(echo_id, request_id_header="") as server, httpx.AsyncClient() as c:
        assert (await c.get(server.url, headers={"X-Request-ID": "r"})).text == "None"


async def test_access_log_atom_and_json_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioserve")
    async with (
        open_server(
            echo_id,
            access_log_format='%(request_id)s "%(r)s" %(s)s',
            raise_app_exceptions=False,
        ) as server,
        httpx.AsyncClient() as client,
    ):
        await client.get(
            server.url + "/p?q=1", headers={"X-Request-ID": "rid-7", "User-Agent": "t"}
        )
        await client.get(server.url + "/boom", headers={"X-Request-ID": "rid-8"})
    access = [r for r in caplog.records if r.name == "trioserve.access"]
    assert access[0].getMessage() == 'rid-7 "GET /p?q=1 HTTP/1.1" 200'
    entry = json.loads(JSONFormatter().format(access[0]))
    for key in ("time", "level", "logger", "pid", "message"):
        assert key in entry
    assert {k: entry[k] for k in entry if k not in ("time", "pid", "client_port")} == {
        "level": "INFO",
        "logger": "trioserve.access",
        "message": 'rid-7 "GET /p?q=1 HTTP/1.1" 200',
        "request_id": "rid-7",
        "client": "127.0.0.1",
        "scheme": "http",
        "method": "GET",
        "path": "/p",
        "query": "q=1",
        "http_version": "1.1",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes_sent": 5,
        "duration_ms": entry["duration_ms"],
        "user_agent": "t",
        "referer": None,
    }
    assert isinstance(entry["duration_ms"], float)
    error = next(r for r in caplog.records if "Exception in ASGI application" in r.getMessage())
    error_entry = json.loads(JSONFormatter().format(error))
    assert error_entry["request_id"] == "rid-8"
    assert "RuntimeError: boom" in error_entry["exception"]


@given(st.binary(max_size=200))
def test_any_header_value_gives_a_sane_id(raw: bytes) -> None:
    ids = RequestIds("X-Request-ID")
    rid = ids.pick([(b"x-request-id", raw)])
    assert 1 <= len(rid) <= MAX_LENGTH
    assert re.fullmatch(r"[A-Za-z0-9\-_.~:/+=@]+", rid)
    if re.fullmatch(rb"[A-Za-z0-9\-_.~:/+=@]{1,128}", raw):
        assert rid == raw.decode()
