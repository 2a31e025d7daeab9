"""Access-log lines in Hypercorn's (gunicorn's) ``%(atom)s`` format.

The atoms are computed lazily by a mapping, so a format that uses three atoms pays for
three. Atoms: h remote address, l '-', u user '-', t time, r request line, m method,
U path, q query string, H protocol, s status, st status phrase, S scheme, B body bytes,
b body bytes or '-', f referer, a user agent, T seconds, D microseconds, L seconds with
decimals, p pid, M milliseconds, R raw path+query, request_id the request id
(``scope["request_id"]``), {name}i request header, {name}o response header, {name}e
environment variable, X (Apache's) "X" if the exchange was cut before the response
completed (the client left, or a send/body deadline closed it), else "+".
:func:`json_fields` gives the JSON log's stable access fields.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any

from .events import Headers


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "-"


class AccessLogAtoms(Mapping[str, str]):
    """A read-only mapping from atom names to their text for one finished request."""

    __slots__ = (
        "bytes_sent",
        "complete",
        "duration",
        "end",
        "response_headers",
        "scope",
        "status",
        "target",
    )

    def __init__(
        self,
        scope: Mapping[str, Any],
        status: int | None,
        response_headers: Headers | None,
        bytes_sent: int,
        duration: float,
        end: float,
        target: bytes | None = None,
        complete: bool = True,
    ) -> None:
        """``end``: when the request ended, in seconds since the epoch (the ``t`` atom);
        the caller reads the clock, so this module never does. ``target``: the request
        target as received (the ``r`` atom shows it; without it, the scope's path)."""
        self.scope = scope
        self.status = status
        self.response_headers = response_headers or []
        self.bytes_sent = bytes_sent
        self.duration = duration
        self.end = end
        self.complete = complete  # False: the exchange was cut (the X atom)
        self.target = target

    def __getitem__(self, key: str) -> str:
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name = key[1:-2].lower()
            kind = key[-1]
            if kind == "i":
                return _header(self.scope.get("headers", []), name)
            if kind == "o":
                return _header(self.response_headers, name)
            if kind == "e":
                return str(os.environ.get(key[1:-2], "-"))
            raise KeyError(key)
        getter = _ATOMS.get(key)
        if getter is None:
            raise KeyError(key)
        return str(getter(self))

    def __iter__(self) -> Iterator[str]:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)


def _header(headers: Any, name: str) -> str:
    """All values of a header, comma-joined ('-' if absent)."""
    wanted = name.encode("latin-1")
    values = [v.decode("latin-1") for k, v in headers if k.lower() == wanted]
    return ",".join(values) if values else "-"


def _client(a: AccessLogAtoms) -> str:
    client = a.scope.get("client")
    return client[0] if client else "-"


def _path_query(a: AccessLogAtoms) -> str:
    path = _text(a.scope.get("path", ""))
    query = _text(a.scope.get("query_string", b""))
    return f"{path}?{query}" if query else path


def _target(a: AccessLogAtoms) -> str:
    """The target as the client sent it (the scope's path has root_path in front)."""
    if a.target is not None:
        return a.target.decode("latin-1")
    scope = a.scope
    raw = scope.get("raw_path")
    if raw is None:
        return _path_query(a)
    root = _text(scope.get("root_path", "")).encode("latin-1", "replace")
    if root and raw.startswith(root):
        raw = raw[len(root) :]
    query = scope.get("query_string", b"")
    return _text(raw + b"?" + query if query else raw)


def _protocol(a: AccessLogAtoms) -> str:
    if a.scope.get("type") == "websocket":
        return "WS/" + _text(a.scope.get("http_version", "1.1"))
    return "HTTP/" + _text(a.scope.get("http_version", "1.1"))


def _method(a: AccessLogAtoms) -> str:
    return str(a.scope.get("method", "GET"))


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _time(a: AccessLogAtoms) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(a.end))


_ATOMS: dict[str, Any] = {
    "h": _client,
    "l": lambda a: "-",
    "u": lambda a: "-",
    "t": _time,
    "r": lambda a: f"{_method(a)} {_target(a)} {_protocol(a)}",
    "R": lambda a: _path_query(a),
    "m": _method,
    "U": lambda a: a.scope.get("path", ""),
    "Uq": _path_query,
    "q": lambda a: a.scope.get("query_string", b"").decode("latin-1"),
    "H": _protocol,
    "s": lambda a: str(a.status) if a.status is not None else "-",
    "st": lambda a: _phrase(a.status) if a.status is not None else "-",
    "S": lambda a: a.scope.get("scheme", "http"),
    "B": lambda a: str(a.bytes_sent),
    "b": lambda a: str(a.bytes_sent) if a.bytes_sent else "-",
    "f": lambda a: _header(a.scope.get("headers", []), "referer"),
    "a": lambda a: _header(a.scope.get("headers", []), "user-agent"),
    "T": lambda a: str(int(a.duration)),
    "D": lambda a: str(int(a.duration * 1_000_000)),
    "M": lambda a: str(int(a.duration * 1_000)),
    "L": lambda a: f"{a.duration:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
    "X": lambda a: "+" if a.complete else "X",
    "request_id": lambda a: a.scope.get("request_id", "-"),
}


def json_fields(a: AccessLogAtoms) -> dict[str, Any]:
    """The access fields of a JSON log line. Names are stable: log pipelines key on them
    (docs/observability.md lists them); add fields, never rename one."""
    scope = a.scope
    client = scope.get("client")
    return {
        "request_id": scope.get("request_id"),
        "client": client[0] if client else None,
        "client_port": client[1] if client else None,
        "scheme": scope.get("scheme", "http"),
        "method": scope.get("method", "GET"),
        "path": scope.get("path", ""),
        "query": _text(scope.get("query_string", b"")),
        "http_version": _text(scope.get("http_version", "1.1")),
        "protocol": _protocol(a),
        "status": a.status,
        "bytes_sent": a.bytes_sent,
        "duration_ms": round(a.duration * 1000, 3),
        "user_agent": _optional_header(scope, "user-agent"),
        "referer": _optional_header(scope, "referer"),
    }


def _optional_header(scope: Mapping[str, Any], name: str) -> str | None:
    value = _header(scope.get("headers", []), name)
    return None if value == "-" else value


class AccessLine(str):
    """A rendered line that keeps its atoms: a handler that forwards it to ``uvicorn.access``
    (a Uvicorn log config) can then give Uvicorn's formatter the fields it expects."""

    atoms: AccessLogAtoms


def format_access_line(fmt: str, atoms: AccessLogAtoms) -> str:
    """Render one line; an unknown atom renders as '-' rather than losing the line."""
    try:
        line = AccessLine(fmt % atoms)
    except (KeyError, ValueError, TypeError):
        line = AccessLine(fmt % _Lenient(atoms))
    line.atoms = atoms
    return line


class _Lenient(dict[str, str]):
    def __init__(self, atoms: AccessLogAtoms) -> None:
        super().__init__()
        self._atoms = atoms

    def __getitem__(self, key: str) -> str:
        try:
            return self._atoms[key]
        except KeyError:
            return "-"
