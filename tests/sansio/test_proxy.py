"""Proxy headers, trusted peers and the PROXY protocol parsers, without sockets."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioserve.sansio.proxy import (
    FORWARDED_HEADERS,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    TrustedPeers,
    apply_proxy_headers,
    honoured_headers,
    parse_forwarded,
    parse_proxy_header,
    prepare_scope,
)

LOCAL = TrustedPeers(["127.0.0.1", "::1"])
ALL = honoured_headers(FORWARDED_HEADERS)


def scope(
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None = ("127.0.0.1", 5000),
    kind: str = "http",
) -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "client": client,
        "server": ("127.0.0.1", 8000),
        "path": "/items",
        "raw_path": b"/items",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "extensions": {},
    }


# --- trusted peers ------------------------------------------------------------------------


def test_trusted_peers_ips_cidrs_unix_and_star() -> None:
    peers = TrustedPeers(["10.0.0.0/8, 192.168.1.5", "::1", "unix"])
    assert peers.trusts("10.1.2.3")
    assert peers.trusts("192.168.1.5")
    assert not peers.trusts("192.168.1.6")
    assert peers.trusts("::1")
    assert peers.trusts("::ffff:10.0.0.1")  # IPv4-mapped
    assert peers.trusts(None)  # unix socket peer
    assert not peers.trusts("not-an-ip")
    assert not TrustedPeers(["127.0.0.1"]).trusts(None)
    assert TrustedPeers(["*"]).trusts("8.8.8.8")
    assert TrustedPeers(["*"]).trusts(None)


# --- X-Forwarded-* ------------------------------------------------------------------------


def test_x_forwarded_from_trusted_peer_when_all_are_honoured() -> None:
    s = scope(
        [
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"example.com"),
            (b"x-forwarded-prefix", b"/api/"),
        ]
    )
    assert apply_proxy_headers(s, LOCAL, ALL)
    assert s["client"] == ("203.0.113.7", 0)
    assert s["scheme"] == "https"
    assert s["server"] == ("127.0.0.1", 8000)  # always the address we listen on
    assert [v for k, v in s["headers"] if k == b"host"] == [b"example.com"]
    assert s["root_path"] == "/api"
    assert s["path"] == "/api/items"
    assert s["raw_path"] == b"/items"  # never rewritten: the bytes the client sent


def test_default_honours_only_x_forwarded_for_and_proto() -> None:
    """Uvicorn's set: a client's own Host/Port/Prefix/Forwarded headers change nothing."""
    s = scope(
        [
            (b"x-forwarded-host", b"evil.example"),
            (b"x-forwarded-port", b"1"),
            (b"x-forwarded-prefix", b"/evil"),
            (b"forwarded", b"for=198.51.100.1;proto=https;host=evil.example"),
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-forwarded-proto", b"https"),
        ]
    )
    before = dict(s)
    assert apply_proxy_headers(s, LOCAL)
    assert s["client"] == ("203.0.113.7", 0)  # X-Forwarded-For, not Forwarded's for=
    assert s["scheme"] == "https"
    assert s["headers"] == before["headers"]
    assert (s["server"], s["root_path"], s["path"], s["raw_path"]) == (
        ("127.0.0.1", 8000),
        "",
        "/items",
        b"/items",
    )
    # Only unhonoured headers: nothing applies at all.
    s = scope([(b"forwarded", b"for=198.51.100.1"), (b"x-forwarded-host", b"evil")])
    assert not apply_proxy_headers(s, LOCAL)
    assert s["client"] == ("127.0.0.1", 5000)


def test_each_header_is_honoured_alone() -> None:
    s = scope([(b"x-forwarded-host", b"example.com"), (b"x-forwarded-for", b"203.0.113.7")])
    apply_proxy_headers(s, LOCAL, honoured_headers(("x-forwarded-host",)))
    assert s["client"] == ("127.0.0.1", 5000)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"example.com"]
    s = scope([(b"x-forwarded-prefix", b"/api")])
    apply_proxy_headers(s, LOCAL, honoured_headers(("X-Forwarded-Prefix",)))
    assert (s["root_path"], s["path"], s["raw_path"]) == ("/api", "/api/items", b"/items")


def test_spoofed_x_forwarded_for_from_untrusted_peer_is_ignored() -> None:
    s = scope(
        [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")],
        client=("198.51.100.9", 4000),
    )
    assert not apply_proxy_headers(s, LOCAL)
    assert s["client"] == ("198.51.100.9", 4000)
    assert s["scheme"] == "http"


def test_client_spoofing_through_a_trusted_proxy_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the trusted proxy appended the real one.
    s = scope([(b"x-forwarded-for", b"1.2.3.4, 203.0.113.7")])
    apply_proxy_headers(s, LOCAL)
    assert s["client"] == ("203.0.113.7", 0)


def test_chain_of_trusted_proxies_walks_right_to_left() -> None:
    peers = TrustedPeers(["127.0.0.1", "10.0.0.0/8"])
    s = scope([(b"x-forwarded-for", b"203.0.113.7, 10.0.0.2, 10.0.0.3")])
    apply_proxy_headers(s, peers)
    assert s["client"] == ("203.0.113.7", 0)
    # All trusted: the leftmost is the client.
    s = scope([(b"x-forwarded-for", b"10.0.0.1, 10.0.0.2")])
    apply_proxy_headers(s, peers)
    assert s["client"] == ("10.0.0.1", 0)


def test_forwarded_port_and_host_with_port() -> None:
    s = scope([(b"x-forwarded-host", b"example.com"), (b"x-forwarded-port", b"8443")])
    apply_proxy_headers(s, LOCAL, ALL)
    assert s["server"] == ("127.0.0.1", 8000)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"example.com:8443"]
    s = scope([(b"x-forwarded-host", b"example.com:9000")])
    apply_proxy_headers(s, LOCAL, ALL)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"example.com:9000"]
    # The port alone changes the port of the Host the client sent.
    s = scope([(b"x-forwarded-port", b"8080")])
    apply_proxy_headers(s, LOCAL, ALL)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"127.0.0.1:8080"]
    # A host that is not a host is ignored.
    s = scope([(b"x-forwarded-host", b"a b/c@d")])
    apply_proxy_headers(s, LOCAL, ALL)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"127.0.0.1:8000"]


def test_websocket_scheme_becomes_wss() -> None:
    s = scope([(b"x-forwarded-proto", b"https")], kind="websocket")
    apply_proxy_headers(s, LOCAL)
    assert s["scheme"] == "wss"
    s = scope([(b"x-forwarded-proto", b"wss")], kind="http")
    apply_proxy_headers(s, LOCAL)
    assert s["scheme"] == "https"


def test_bogus_values_are_ignored() -> None:
    s = scope(
        [
            (b"x-forwarded-for", b"unknown"),
            (b"x-forwarded-proto", b"gopher"),
            (b"x-forwarded-port", b"99999"),
        ]
    )
    apply_proxy_headers(s, LOCAL)
    assert s["client"] == ("127.0.0.1", 5000)
    assert s["scheme"] == "http"
    assert s["server"] == ("127.0.0.1", 8000)


def test_unix_peer_trusted_only_when_listed() -> None:
    s = scope([(b"x-forwarded-for", b"203.0.113.7")], client=None)
    assert not apply_proxy_headers(s, LOCAL)
    assert s["client"] is None
    assert apply_proxy_headers(s, TrustedPeers(["unix"]))
    assert s["client"] == ("203.0.113.7", 0)


# --- RFC 7239 Forwarded -------------------------------------------------------------------


def test_parse_forwarded_rfc7239_examples() -> None:
    elements = parse_forwarded(
        [
            'for="_gazonk"',
            'For="[2001:db8:cafe::17]:4711"',
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            'for=192.0.2.43, for="198.51.100.17;x=y,z"',
        ]
    )
    assert elements == [
        {"for": "_gazonk"},
        {"for": "[2001:db8:cafe::17]:4711"},
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17;x=y,z"},
    ]


def test_forwarded_header_wins_over_x_forwarded() -> None:
    s = scope(
        [
            (b"forwarded", b'for="[2001:db8:cafe::17]:4711";proto=https;host=example.org'),
            (b"x-forwarded-for", b"9.9.9.9"),
        ]
    )
    apply_proxy_headers(s, LOCAL, ALL)
    assert s["client"] == ("2001:db8:cafe::17", 4711)
    assert s["scheme"] == "https"
    assert s["server"] == ("127.0.0.1", 8000)
    assert [v for k, v in s["headers"] if k == b"host"] == [b"example.org"]


def test_forwarded_obfuscated_identifier_keeps_peer() -> None:
    s = scope([(b"forwarded", b"for=_hidden;proto=https")])
    apply_proxy_headers(s, LOCAL, ALL)
    assert s["client"] == ("127.0.0.1", 5000)
    assert s["scheme"] == "https"


@given(st.text(max_size=200))
def test_parse_forwarded_never_raises(text: str) -> None:
    parse_forwarded([text])
    s = scope([(b"forwarded", text.encode("utf-8", "replace"))])
    apply_proxy_headers(s, LOCAL, ALL)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_apply_proxy_headers_never_raises(xff: bytes, host: bytes) -> None:
    s = scope([(b"x-forwarded-for", xff), (b"x-forwarded-host", host)])
    apply_proxy_headers(s, LOCAL, ALL)


def test_prepare_scope_adds_tls_copy_and_applies_headers() -> None:
    tls = {"tls_version": 0x0304, "client_cert_chain": ["PEM"], "server_cert": None}
    s = scope([(b"x-forwarded-for", b"203.0.113.7")])
    prepare_scope(s, proxy_headers=True, forwarded_allow_ips=["127.0.0.1"], tls=tls)
    assert s["client"] == ("203.0.113.7", 0)
    assert s["extensions"]["tls"] == tls
    s["extensions"]["tls"]["client_cert_chain"].append("x")
    assert tls["client_cert_chain"] == ["PEM"]
    s = scope([(b"x-forwarded-for", b"203.0.113.7")])
    prepare_scope(s, proxy_headers=False, forwarded_allow_ips=["*"])
    assert s["client"] == ("127.0.0.1", 5000)
    assert "tls" not in s["extensions"]
    s = scope([(b"x-forwarded-host", b"example.com")])
    prepare_scope(s, proxy_headers=True, forwarded_allow_ips=["*"])
    assert (b"host", b"example.com") not in s["headers"]
    prepare_scope(
        s, proxy_headers=True, forwarded_allow_ips=["*"], forwarded_headers=["x-forwarded-host"]
    )
    assert (b"host", b"example.com") in s["headers"]


# --- PROXY protocol v1 --------------------------------------------------------------------


def test_v1_tcp4_and_tcp6() -> None:
    data = b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse_proxy_header(data)
    assert header == ProxyHeader(1, 44, ("203.0.113.7", 56324), ("127.0.0.1", 443))
    assert data[header.length :].startswith(b"GET /")
    header = parse_proxy_header(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
    assert header is not None
    assert header.source == ("2001:db8::1", 1)


def test_v1_unknown_keeps_addresses() -> None:
    header = parse_proxy_header(b"PROXY UNKNOWN\r\n")
    assert header == ProxyHeader(1, 15)
    header = parse_proxy_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    assert header is not None and header.source is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXX TCP4",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY " + b"A" * 120,
        b"PROXY \xff\xfe 1.2.3.4\r\n",
    ],
)
def test_v1_malformed(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


def test_v1_prefixes_need_more_data() -> None:
    line = b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 443\r\n"
    for i in range(len(line)):
        assert parse_proxy_header(line[:i]) is None, line[:i]


# --- PROXY protocol v2 --------------------------------------------------------------------


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(1, 0x11, body + tlvs)


def test_v2_tcp4_with_tlv() -> None:
    tlv = struct.pack("!BH", 0x02, 11) + b"example.com"
    data = v2_tcp4("203.0.113.7", "127.0.0.1", 1234, 443, tlv) + b"GET /"
    header = parse_proxy_header(data)
    assert header is not None
    assert header.version == 2
    assert header.source == ("203.0.113.7", 1234)
    assert header.destination == ("127.0.0.1", 443)
    assert header.tlvs == ((2, b"example.com"),)
    assert data[header.length :] == b"GET /"


def test_v2_tcp6_and_local_and_unspec() -> None:
    src = ipaddress.IPv6Address("2001:db8::7").packed
    dst = ipaddress.IPv6Address("::1").packed
    header = parse_proxy_header(v2(1, 0x21, src + dst + struct.pack("!HH", 5, 6)))
    assert header is not None and header.source == ("2001:db8::7", 5)
    local = parse_proxy_header(v2(0, 0x00, b""))
    assert local == ProxyHeader(2, 16)
    unspec = parse_proxy_header(v2(1, 0x00, b"\x00" * 4))
    assert unspec is not None and unspec.source is None


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE[:6] + b"XXXXXX" + b"\x21\x11\x00\x0c",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # IPv4 block too short
        V2_SIGNATURE + b"\x21\x21\x00\x04" + b"\x00" * 4,  # IPv6 block too short
        V2_SIGNATURE + b"\x21\x51\x00\x00",  # address family 5
        v2_tcp4("1.2.3.4", "5.6.7.8", 1, 2, b"\x02\x00\x09abc"),  # truncated TLV
    ],
)
def test_v2_malformed(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


def test_v2_prefixes_need_more_data() -> None:
    data = v2_tcp4("203.0.113.7", "127.0.0.1", 1234, 443)
    for i in range(len(data)):
        assert parse_proxy_header(data[:i]) is None


@given(st.binary(max_size=300))
def test_parser_never_raises_anything_else(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyProtocolError:
        return
    if result is not None:
        assert 0 < result.length <= len(data)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535), st.integers(0, 65535))
def test_v1_and_v2_round_trip(
    src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sport: int, dport: int
) -> None:
    line = f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()
    h1 = parse_proxy_header(line)
    h2 = parse_proxy_header(v2_tcp4(str(src), str(dst), sport, dport))
    assert h1 is not None and h2 is not None
    assert h1.source == h2.source == (str(src), sport)
    assert h1.destination == h2.destination == (str(dst), dport)
