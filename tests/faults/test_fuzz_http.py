"""Property fuzzer over the raw request stream, for both HTTP/1.1 parsers.

Every input, well-formed or not, pipelined or cut short, gets responses (each starting with
a status line) followed by a clean close, or just a clean close; never a hang, a reset
after nothing, or a traceback in the server's log; and the server keeps serving.
"""

from __future__ import annotations

import os
import re

from hypothesis import given
from hypothesis import strategies as st

from ..supervisor.procs import Server
from .fuzzserver import assert_serving_without_traceback, exchange, fuzz_settings

EXAMPLES = int(os.environ.get("FAULTS_FUZZ_EXAMPLES", "250"))

token = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_!#$%&'*+.^`|~"),
    min_size=1,
    max_size=12,
)
junk = st.binary(max_size=24)

methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"CONNECT"]),
    token.map(str.encode),
    junk,
)
targets = st.one_of(
    st.sampled_from([b"/", b"/a?b=c", b"*", b"http://x/y", b"//", b"/%00", b"/\xff", b""]),
    junk,
)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.", b"http/1.1", b""])
values = st.one_of(
    st.sampled_from([b"0", b"5", b"-1", b"18446744073709551616", b"chunked", b"gzip, chunked"]),
    st.sampled_from([b"close", b"keep-alive", b"100-continue", b"websocket", b" 3", b"3,3"]),
    junk,
)
names = st.one_of(
    st.sampled_from(
        [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade"]
    ),
    token.map(str.encode),
    junk,
)
eols = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(max_size=20))
        size = draw(st.one_of(st.just(b"%x" % len(data)), junk))
        out += size + draw(eols) + data + draw(eols)
    if draw(st.booleans()):
        out += b"0\r\n\r\n"
    return out


@st.composite
def request(draw: st.DrawFn) -> bytes:
    eol = draw(eols)
    line = draw(methods) + b" " + draw(targets) + b" " + draw(versions)
    headers = draw(st.lists(st.tuples(names, values), max_size=6))
    if draw(st.booleans()):
        headers.insert(0, (b"Host", b"x"))
    head = line + eol + b"".join(n + b": " + v + eol for n, v in headers) + eol
    body = draw(st.one_of(st.binary(max_size=40), chunked_body()))
    return head + body


streams = st.one_of(
    st.lists(request(), min_size=1, max_size=3).map(b"".join),
    st.binary(max_size=200),
    request().map(lambda r: r[: len(r) // 2]),  # cut short
)


def check(server: Server, data: bytes) -> None:
    answer, ending = exchange(server.port, data)
    assert ending != "timeout", f"hang on {data!r}"
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), (data, answer[:200])
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses, answer[:200]
    else:
        assert ending == "eof", f"reset without an answer on {data!r}"
    assert server.proc.poll() is None, "the server died"


@fuzz_settings(EXAMPLES)
@given(data=streams)
def test_every_request_stream_gets_a_response_or_a_clean_close(
    fuzz_server: Server, data: bytes
) -> None:
    check(fuzz_server, data)


def test_no_traceback_and_still_serving(fuzz_server: Server) -> None:
    """Runs after the fuzzer on the same server (module-scoped, in file order)."""
    assert_serving_without_traceback(fuzz_server)
