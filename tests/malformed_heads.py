"""Malformed request heads and trailers (RFC 9113 8.1.1-8.3, RFC 9114 4.1.2-4.3), shared by
the HTTP/2 and HTTP/3 tests: each must be refused on its own stream while another stream
on the same connection completes (h2 and aioquic used to end the whole connection)."""

from __future__ import annotations

Fields = list[tuple[bytes, bytes]]


def head(scheme: bytes, *extra: tuple[bytes, bytes], path: bytes = b"/") -> Fields:
    return [
        (b":method", b"GET"),
        (b":scheme", scheme),
        (b":authority", b"localhost"),
        (b":path", path),
        *extra,
    ]


def cases(scheme: bytes) -> dict[str, Fields]:
    """Request heads answered 400, by name."""
    base = head(scheme)
    without = {name: [f for f in base if f[0] != name] for name, _ in base}
    return {
        "uppercase-name": head(scheme, (b"X-Upper", b"1")),
        "space-in-name": head(scheme, (b"x y", b"1")),
        "colon-in-name": head(scheme, (b"x:y", b"1")),
        "non-ascii-name": head(scheme, (b"x\xe9", b"1")),
        "empty-name": head(scheme, (b"", b"1")),
        "nul-in-value": head(scheme, (b"x", b"a\0b")),
        "cr-in-value": head(scheme, (b"x", b"a\rb")),
        "lf-in-value": head(scheme, (b"x", b"a\nb")),
        "leading-space": head(scheme, (b"x", b" a")),
        "trailing-tab": head(scheme, (b"x", b"a\t")),
        "duplicate-pseudo": head(scheme, (b":path", b"/again")),
        "unknown-pseudo": [(b":foo", b"1"), *base],
        "late-pseudo": [*without[b":path"], (b"x", b"1"), (b":path", b"/")],
        "response-pseudo": [(b":status", b"200"), *base],
        "informational-status": [(b":status", b"100"), *base],
        "content-length-not-a-number": head(scheme, (b"content-length", b"abc")),
        "content-lengths-disagree": head(
            scheme, (b"content-length", b"1"), (b"content-length", b"2")
        ),
        "no-method": without[b":method"],
        "no-scheme": without[b":scheme"],
        "no-path": without[b":path"],
        "empty-path": head(scheme, path=b""),
        "no-authority-or-host": without[b":authority"],
        "connect-with-path": [(b":method", b"CONNECT"), *base[1:]],
        "te-gzip": head(scheme, (b"te", b"gzip")),
        "connection": head(scheme, (b"connection", b"close")),
        "keep-alive": head(scheme, (b"keep-alive", b"5")),
        "proxy-connection": head(scheme, (b"proxy-connection", b"x")),
        "transfer-encoding": head(scheme, (b"transfer-encoding", b"chunked")),
        "upgrade": head(scheme, (b"upgrade", b"websocket")),
        "host-disagrees": head(scheme, (b"host", b"elsewhere")),
        "two-hosts": [*without[b":authority"], (b"host", b"a"), (b"host", b"a")],
    }


# Trailers that reset their stream (RFC 9113 8.1 / RFC 9114 4.1.2).
BAD_TRAILERS: dict[str, Fields] = {
    "pseudo-in-trailers": [(b":path", b"/")],
    "uppercase-trailer": [(b"X-Upper", b"1")],
    "connection-trailer": [(b"connection", b"close")],
    "content-length-trailer": [(b"content-length", b"x")],
}


def good(scheme: bytes) -> dict[str, Fields]:
    """Heads near the edge that are served: te: trailers, Host only, Host = :authority."""
    host_only = [(b":method", b"GET"), (b":scheme", scheme), (b":path", b"/"), (b"host", b"h")]
    return {
        "te-trailers": head(scheme, (b"te", b"trailers")),
        "host-only": host_only,
        "host-agrees": head(scheme, (b"host", b"localhost")),
    }


def request_line_cases(scheme: bytes) -> dict[str, Fields]:
    """Pseudo-header values HTTP/1.1 would refuse in its request line (issues 22 and 23),
    answered 400 on their stream by HTTP/2 and HTTP/3 alike."""

    def request(method: bytes, path: bytes) -> Fields:
        return [(b":method", method), *head(scheme, path=path)[1:]]

    return {
        "path-without-slash": request(b"GET", b"admin"),
        "non-ascii-method": request(b"G\xc3\x89T", b"/"),
        "space-in-path": request(b"GET", b"/a b"),
        "control-in-path": request(b"GET", b"/a\x01b"),
        "del-in-path": request(b"GET", b"/a\x7fb"),
        "request-line-as-method": request(b"GET /admin HTTP/1.1", b"/"),
        "asterisk-not-options": request(b"GET", b"*"),
        "absolute-form-path": request(b"GET", b"http://example.com/"),  # HTTP/1.x only
        "host-not-authority": head(scheme, (b"host", b"other.example")),
    }
