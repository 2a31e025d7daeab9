"""What a reverse proxy tells us about the real client: headers and the PROXY protocol.

Pure functions, no I/O, so the HTTP and WebSocket paths (and every HTTP version) apply
exactly the same rules, and the parsers are tested byte by byte.

* :class:`TrustedPeers` decides whose word we take (``forwarded_allow_ips``: IPs, CIDRs,
  ``unix`` for unix-socket peers, ``*``).
* :func:`apply_proxy_headers` rewrites an ASGI ``http`` or ``websocket`` scope from
  ``X-Forwarded-For`` and ``-Proto`` (and, only when the operator names them,
  ``-Host/-Port/-Prefix`` or RFC 7239 ``Forwarded``) - only when the immediate peer is
  trusted. In a chain of proxies the client is the rightmost address that
  is not itself a trusted proxy (so a client cannot spoof its address by sending its own
  ``X-Forwarded-For``: the trusted proxy appends the real one after it).
* The PROXY protocol parser lives in :mod:`trioserve.sansio.proxy_protocol` (its names are
  re-exported here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .proxy_protocol import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    parse_proxy_header,
)

__all__ = [
    "DEFAULT_FORWARDED_HEADERS",
    "FORWARDED_HEADERS",
    "V1_MAX",
    "V2_MAX",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "TrustedPeers",
    "apply_proxy_headers",
    "honoured_headers",
    "parse_forwarded",
    "parse_proxy_header",
    "prepare_scope",
    "trusted_peers",
]

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """The set of peers whose proxy headers (and PROXY protocol headers) we believe."""

    __slots__ = ("_cache", "all", "hosts", "networks", "unix")

    def __init__(self, entries: Iterable[str]) -> None:
        self.all = False
        self.unix = False
        self.networks: list[_IPNetwork] = []
        self.hosts: set[str] = set()
        self._cache: dict[str, bool] = {}
        for raw in entries:
            for entry in raw.split(","):
                entry = entry.strip()
                if not entry:
                    continue
                if entry == "*":
                    self.all = True
                elif entry.lower() == "unix":
                    self.unix = True
                else:
                    try:
                        self.networks.append(ipaddress.ip_network(entry, strict=False))
                    except ValueError:
                        # A literal (e.g. a hostname a proxy puts in X-Forwarded-For).
                        self.hosts.add(entry)

    def trusts(self, host: str | None) -> bool:
        """Whether ``host`` (an address; None for a unix-socket peer) is a trusted proxy."""
        if self.all:
            return True
        if host is None:
            return self.unix
        known = self._cache.get(host)
        if known is not None:
            return known
        result = self._trusts(host)
        if len(self._cache) >= 1024:  # bounded: addresses come from outside
            self._cache.clear()
        self._cache[host] = result
        return result

    def _trusts(self, host: str) -> bool:
        if host in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


@lru_cache(maxsize=32)
def trusted_peers(entries: tuple[str, ...]) -> TrustedPeers:
    """A cached :class:`TrustedPeers` for a config's ``forwarded_allow_ips``."""
    return TrustedPeers(entries)


# --- RFC 7239 Forwarded ----------------------------------------------------------------------


def _split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (quoted-string may contain it)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return value


def parse_forwarded(values: Iterable[str]) -> list[dict[str, str]]:
    """Parse ``Forwarded`` header values into elements (left = farthest from us).

    Parameter names are lower-cased; values are unquoted. A malformed pair is skipped
    rather than failing the request: the header comes from outside.
    """
    elements: list[dict[str, str]] = []
    for value in values:
        for element_text in _split_quoted(value, ","):
            element: dict[str, str] = {}
            for pair in _split_quoted(element_text, ";"):
                name, sep, raw = pair.partition("=")
                name = name.strip().lower()
                if not sep or not name:
                    continue
                element[name] = _unquote(raw)
            if element:
                elements.append(element)
    return elements


def _split_host_port(node: str) -> tuple[str, int | None]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80``, bare ``::1`` -> (host, port)."""
    node = node.strip()
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port_text = node.partition(":")
    else:
        host, port_text = node, ""
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else None
    return host, port


@lru_cache(maxsize=1024)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _comma_list(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class _Forwarded:
    """What the proxies told us, after the trust walk."""

    client: tuple[str, int] | None = None
    proto: str | None = None
    host: str | None = None
    port: int | None = None
    prefix: str | None = None


def _pick_client(nodes: list[str], trusted: TrustedPeers) -> str | None:
    """Rightmost entry that is not a trusted proxy; the leftmost if all are trusted."""
    for node in reversed(nodes):
        host, _ = _split_host_port(node)
        if not trusted.trusts(host):
            return node
    return nodes[0] if nodes else None


def _client_from(node: str | None) -> tuple[str, int] | None:
    if node is None:
        return None
    host, port = _split_host_port(node)
    if not _is_ip(host):  # "unknown", "_hidden" obfuscated identifiers
        return None
    return host, port or 0


# Every header that can be honoured, and the default: what Uvicorn honours. The others let
# a client that talks through a proxy which passes them on unchanged (nginx's default for
# any header it does not set itself) choose the Host the app builds URLs from, or its own
# address, so they are honoured only when the operator names them.
FORWARDED_HEADERS = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
)
DEFAULT_FORWARDED_HEADERS = ("x-forwarded-for", "x-forwarded-proto")


@lru_cache(maxsize=32)
def honoured_headers(names: tuple[str, ...]) -> frozenset[bytes]:
    """A config's ``forwarded_headers`` as the lower-case byte names the scope carries."""
    return frozenset(name.strip().lower().encode("latin-1") for name in names)


_DEFAULT_HONOURED = honoured_headers(DEFAULT_FORWARDED_HEADERS)


def _read_forwarded(
    headers: Iterable[tuple[bytes, bytes]], trusted: TrustedPeers, honour: frozenset[bytes]
) -> _Forwarded:
    found: dict[bytes, list[str]] = {}
    for name, value in headers:
        name = name.lower()
        if name in honour:
            found.setdefault(name, []).append(value.decode("latin-1"))
    prefix_values = _comma_list(found.get(b"x-forwarded-prefix", []))
    prefix = prefix_values[-1] if prefix_values else None
    forwarded = found.get(b"forwarded")
    if forwarded:
        return _from_rfc7239(forwarded, trusted, prefix)
    xff = _comma_list(found.get(b"x-forwarded-for", []))
    protos = _comma_list(found.get(b"x-forwarded-proto", []))
    hosts = _comma_list(found.get(b"x-forwarded-host", []))
    ports = _comma_list(found.get(b"x-forwarded-port", []))
    port_text = ports[-1] if ports else ""
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else None
    return _Forwarded(
        client=_client_from(_pick_client(xff, trusted)) if xff else None,
        proto=protos[-1] if protos else None,
        host=hosts[-1] if hosts else None,
        port=port,
        prefix=prefix,
    )


def _from_rfc7239(values: list[str], trusted: TrustedPeers, prefix: str | None) -> _Forwarded:
    elements = parse_forwarded(values)
    if not elements:
        return _Forwarded(prefix=prefix)
    nodes = [e.get("for", "unknown") for e in elements]
    client_node = _pick_client(nodes, trusted)
    # proto/host come from the element the nearest proxy wrote for the hop we trust.
    chosen = elements[nodes.index(client_node)] if client_node in nodes else elements[-1]
    return _Forwarded(
        client=_client_from(client_node),
        proto=chosen.get("proto"),
        host=chosen.get("host") or None,
        prefix=prefix,
    )


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SECURE = {"https": True, "wss": True, "http": False, "ws": False}


def apply_proxy_headers(
    scope: MutableMapping[str, Any],
    trusted: TrustedPeers,
    honour: frozenset[bytes] = _DEFAULT_HONOURED,
) -> bool:
    """Rewrite an ASGI http/websocket scope from the honoured proxy headers of a trusted peer.

    ``honour`` (see :func:`honoured_headers`) names the headers believed; by default only
    ``X-Forwarded-For`` (``client``) and ``X-Forwarded-Proto`` (``scheme``; ``ws``/``wss``
    for WebSockets), as Uvicorn. Opt-in: ``X-Forwarded-Host``/``-Port`` and ``host=`` set
    the ``host`` header the app builds URLs from, ``X-Forwarded-Prefix`` is put before
    ``root_path`` and ``path``, and RFC 7239 ``Forwarded`` (which then wins over
    ``X-Forwarded-*``) sets client, scheme and host. ``server`` stays the address we
    listen on and ``raw_path`` stays the bytes the client sent. Returns whether it applied
    anything (an honoured header present and the peer trusted).
    """
    headers = scope.get("headers", ())
    for name, _ in headers:
        if name.lower() in honour:
            break
    else:
        return False  # the common case: nothing to apply
    client = scope.get("client")
    if not trusted.trusts(client[0] if client else None):
        return False
    info = _read_forwarded(headers, trusted, honour)
    if info.client is not None:
        scope["client"] = info.client
    if info.proto is not None and info.proto.lower() in _SECURE:
        secure = _SECURE[info.proto.lower()]
        if scope.get("type") == "websocket":
            scope["scheme"] = "wss" if secure else "ws"
        else:
            scope["scheme"] = "https" if secure else "http"
    if info.host is not None or info.port is not None:
        _apply_host(scope, info)
    if info.prefix:
        prefix = "/" + info.prefix.strip("/") if info.prefix.strip("/") else ""
        if prefix:
            scope["root_path"] = prefix + scope.get("root_path", "")
            scope["path"] = prefix + scope.get("path", "")
    return True


def _apply_host(scope: MutableMapping[str, Any], info: _Forwarded) -> None:
    """The ``host`` header from the forwarded host and/or port (``server`` is left alone)."""
    text = info.host
    if text is None:
        text = next(
            (v.decode("latin-1") for n, v in scope.get("headers", ()) if n.lower() == b"host"),
            "",
        )
    hostname, host_port = _split_host_port(text)
    if not hostname or any(c in hostname for c in " \t/\\@?#"):
        return
    port = info.port if info.port is not None else host_port
    bracketed = f"[{hostname}]" if ":" in hostname else hostname
    default = _DEFAULT_PORTS.get(scope.get("scheme", "http"))
    value = bracketed if port is None or port == default else f"{bracketed}:{port}"
    _set_header(scope, b"host", value.encode("latin-1"))


def _set_header(scope: MutableMapping[str, Any], name: bytes, value: bytes) -> None:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != name]
    headers.append((name, value))
    scope["headers"] = headers


def prepare_scope(
    scope: MutableMapping[str, Any],
    *,
    proxy_headers: bool,
    forwarded_allow_ips: Iterable[str],
    forwarded_headers: Iterable[str] = DEFAULT_FORWARDED_HEADERS,
    tls: Mapping[str, Any] | None = None,
) -> None:
    """The connection-level scope adjustments every HTTP and WebSocket scope gets.

    Applies the honoured proxy headers (if enabled and the peer is trusted) and adds the
    ASGI ``tls`` extension (a fresh copy per scope, since apps may mutate it). The
    WebSocket path calls this too, so both see the same client, scheme and TLS information.
    """
    if tls is not None:
        extensions = scope.setdefault("extensions", {})
        extensions["tls"] = dict(tls)
        if tls.get("client_cert_chain") is not None:
            extensions["tls"]["client_cert_chain"] = list(tls["client_cert_chain"])
    if proxy_headers:
        apply_proxy_headers(
            scope,
            trusted_peers(tuple(forwarded_allow_ips)),
            honoured_headers(tuple(forwarded_headers)),
        )


def host_allowed(headers: Iterable[tuple[bytes, bytes]], server_names: Iterable[str]) -> bool:
    """Hypercorn's ``server_names`` rule: the Host header must be one of the names.

    An empty list allows every host. A name without a port also matches that host on any
    port (``example.com`` allows ``example.com:8443``), which Hypercorn's exact comparison
    does not; a name with a port must match exactly.
    """
    names = set(server_names)
    if not names:
        return True
    host = ""
    for name, value in headers:
        if name.lower() == b"host":
            host = value.decode("latin-1").strip().lower()
            break
    if host in names:
        return True
    hostname, port = _split_host_port(host)
    bare = f"[{hostname}]" if ":" in hostname else hostname
    return port is not None and bare in names
