"""HAProxy's PROXY protocol, v1 (text) and v2 (binary): what a TCP-mode proxy says about
the client before the client's own bytes. Pure parsing, no I/O, tested byte by byte; the
trio layer reads the header (``server/transport.py``) and decides whether to believe it
(``forwarded_allow_ips``, see :mod:`trioserve.sansio.proxy`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "parse_proxy_header",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_MAX = 16 + 65535


class ProxyProtocolError(ValueError):
    """A malformed PROXY protocol header: the connection must be closed."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header. ``source``/``destination`` are None for LOCAL/UNKNOWN."""

    version: int
    length: int  # bytes the header occupies on the wire
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse a PROXY header at the start of ``data``.

    Returns None when ``data`` is a valid but incomplete prefix (read more), the header
    when complete (``length`` says how many bytes it used; what follows is the client's
    stream), and raises :class:`ProxyProtocolError` on anything else.
    """
    if not data:
        return None
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data[:1] == b"P":
        return _parse_v1(data)
    raise ProxyProtocolError("connection does not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[:6]
    if not b"PROXY ".startswith(head):
        raise ProxyProtocolError("bad PROXY v1 signature")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end == -1:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyProtocolError("PROXY v1 line too long or not CRLF-terminated")
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = text.split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise ProxyProtocolError("bad PROXY v1 line")
    length = end + 2
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, length)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyProtocolError(f"bad PROXY v1 line: {text!r}")
    _, family, src, dst, sport, dport = parts
    version = 4 if family == "TCP4" else 6
    try:
        src_ip = ipaddress.ip_address(src)
        dst_ip = ipaddress.ip_address(dst)
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY v1 line: {text!r}") from None
    if src_ip.version != version or dst_ip.version != version:
        raise ProxyProtocolError(f"address family mismatch in PROXY v1 line: {text!r}")
    ports = []
    for port_text in (sport, dport):
        if not port_text.isdigit() or (len(port_text) > 1 and port_text[0] == "0"):
            raise ProxyProtocolError(f"bad port in PROXY v1 line: {text!r}")
        port = int(port_text)
        if port > 65535:
            raise ProxyProtocolError(f"port out of range in PROXY v1 line: {text!r}")
        ports.append(port)
    return ProxyHeader(1, length, (str(src_ip), ports[0]), (str(dst_ip), ports[1]))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    sig = data[:12]
    if not V2_SIGNATURE.startswith(sig):
        raise ProxyProtocolError("bad PROXY v2 signature")
    if len(data) < 16:
        return None
    ver_cmd, family, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"unsupported PROXY protocol version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"unknown PROXY v2 command {command}")
    total = 16 + length
    if len(data) < total:
        return None
    body = data[16:total]
    if command == 0:  # LOCAL: the proxy's own connection (health check); keep real addresses
        return ProxyHeader(2, total)
    transport = family & 0x0F
    address_family = family >> 4
    if address_family == 0 or transport not in (1, 2):  # UNSPEC, or not STREAM/DGRAM
        if address_family not in (0, 1, 2, 3) or transport > 2:
            raise ProxyProtocolError(f"unknown PROXY v2 family byte {family:#x}")
        return ProxyHeader(2, total)
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    if address_family == 1:
        if len(body) < 12:
            raise ProxyProtocolError("PROXY v2 IPv4 address block too short")
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
        source = (str(ipaddress.IPv4Address(src)), sport)
        destination = (str(ipaddress.IPv4Address(dst)), dport)
        offset = 12
    elif address_family == 2:
        if len(body) < 36:
            raise ProxyProtocolError("PROXY v2 IPv6 address block too short")
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
        source = (str(ipaddress.IPv6Address(src)), sport)
        destination = (str(ipaddress.IPv6Address(dst)), dport)
        offset = 36
    elif address_family == 3:
        if len(body) < 216:
            raise ProxyProtocolError("PROXY v2 unix address block too short")
        source = destination = None
        offset = 216
    else:
        raise ProxyProtocolError(f"unknown PROXY v2 address family {address_family}")
    return ProxyHeader(2, total, source, destination, _parse_tlvs(body[offset:]))


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError("truncated PROXY v2 TLV")
        kind, size = struct.unpack_from("!BH", data, offset)
        offset += 3
        if len(data) - offset < size:
            raise ProxyProtocolError("truncated PROXY v2 TLV value")
        tlvs.append((kind, data[offset : offset + size]))
        offset += size
    return tuple(tlvs)
