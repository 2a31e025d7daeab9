"""The ASGI side of an HTTP request: scopes in, app messages checked and turned into events.

This is the layer every HTTP version shares. It knows the ASGI spec (message order, types,
HEAD, default headers) and nothing about how bytes are framed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from .events import (
    Data,
    EndData,
    Headers,
    InformationalResponse,
    OutboundEvent,
    Request,
    Response,
)
from .headers import InvalidHeader, validate_response_headers

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# The scope's method text for the usual methods, without decoding it per request.
_METHODS = {
    name.encode("ascii"): name
    for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}


class UnexpectedMessage(RuntimeError):
    """The app sent a message that is wrong for the state of the response."""


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (raw path, query string); absolute-form loses its origin."""
    if target[:1] != b"/":
        if target == b"*":
            return b"*", b""
        # absolute-form: http://host[:port]/path?query
        rest = target.split(b"://", 1)[1]
        slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1), default=-1)
        target = b"/" if slash == -1 else rest[slash:]
        if target[:1] == b"?":
            target = b"/" + target
    path, _, query = target.partition(b"?")
    return path, query


def build_http_scope(
    request: Request,
    *,
    scheme: str,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    root_path: str,
    state: dict[str, Any] | None,
    raw_header_case: bool = False,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    target = request.target
    if target[:1] == b"/":  # origin-form, nearly every request: split_target's first case
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, query = split_target(target)
    # ASGI's path is UTF-8 text: percent-decode the bytes first, so raw UTF-8 in the target
    # ("/café" sent unescaped) reads the same as its escaped form.
    if b"%" in raw_path:
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    else:
        try:  # (one call for the usual ASCII path, where isascii() then decode() were two)
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            path = raw_path.decode("utf-8", "replace")
    method = request.method
    try:
        method_text = _METHODS[method]
    except KeyError:
        method_text = method.decode("ascii")
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    headers = request.raw_headers if raw_header_case and request.raw_headers else request.headers
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": request.http_version,
        "method": method_text,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": extensions if extensions is not None else {},
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


# Header pairs that passed validate_response_headers, as the app gave them -> as checked.
# Apps send the same few pairs again and again (content-type, cache-control, ...): the
# second time a pair costs one lookup instead of two regular expressions and a lower().
_CHECKED: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_CHECKED_MAX = 512  # pairs remembered before starting afresh (changing values churn it)
_CHECKED_VALUE_MAX = 100  # longer values (cookies, tokens) are checked every time


def checked_headers(raw: object) -> Headers:
    """:func:`~.headers.validate_response_headers`, remembering the pairs that passed.

    Only a pair that is exactly a tuple of two ``bytes`` is remembered (and looked up): the
    key is immutable, so a hit is the very pair that passed. Anything else, or any pair not
    seen yet, sends the whole list through the full check. Raises :class:`UnexpectedMessage`.
    """
    if type(raw) is list or type(raw) is tuple:
        out: Headers = []
        append = out.append
        seen = _CHECKED
        for item in raw:
            try:
                append(seen[item])  # (a subscript: no call on the usual hit)
            except (KeyError, TypeError):  # not seen, or unhashable: the full check says
                break
        else:
            return out
    try:
        out = validate_response_headers(raw)
    except InvalidHeader as exc:
        raise UnexpectedMessage(str(exc)) from None
    _remember(raw, out)  # type: ignore[arg-type]
    return out


def _remember(raw: list[Any] | tuple[Any, ...], checked: Headers) -> None:
    seen = _CHECKED
    for item, pair in zip(raw, checked, strict=True):
        if (
            type(item) is tuple
            and type(item[0]) is bytes
            and type(item[1]) is bytes
            and len(item[1]) <= _CHECKED_VALUE_MAX
        ):
            if len(seen) >= _CHECKED_MAX:
                seen.clear()
            seen[item] = pair


# Response progress, as small ints for speed on the hot path.
START, BODY, DONE, TRAILERS = 0, 1, 2, 3

# The response extensions (ASGI "HTTP" extensions), advertised per HTTP version where they
# work: trailers need HTTP/2, or an HTTP/1.1 request saying "TE: trailers" (the response is
# chunked then); 103 needs HTTP/1.1 or later; a file can go out on any version.
TRAILERS_EXT = "http.response.trailers"
EARLY_HINT_EXT = "http.response.early_hint"
PATHSEND_EXT = "http.response.pathsend"
_EXTENSIONS_2: dict[str, Any] = {TRAILERS_EXT: {}, EARLY_HINT_EXT: {}, PATHSEND_EXT: {}}
_EXTENSIONS_11: dict[str, Any] = {EARLY_HINT_EXT: {}, PATHSEND_EXT: {}}
_EXTENSIONS_10: dict[str, Any] = {PATHSEND_EXT: {}}
# What response_extensions() says for a request without a TE header, by HTTP version.
EXTENSIONS_WITHOUT_TE: dict[str, dict[str, Any]] = {
    "1.0": _EXTENSIONS_10,
    "1.1": _EXTENSIONS_11,
    "2": _EXTENSIONS_2,
    "3": _EXTENSIONS_2,
}


def response_extensions(request: Request) -> dict[str, Any]:
    """The response extensions a request's scope advertises (shared dict: copy to change)."""
    version = request.http_version
    if version == "1.1":
        for name, value in request.headers:
            if name == b"te" and b"trailers" in value.lower():
                return _EXTENSIONS_2
        return _EXTENSIONS_11
    return _EXTENSIONS_10 if version == "1.0" else _EXTENSIONS_2


# The end of a body without trailers: read only by every consumer, so one object serves all.
_END_OF_BODY = EndData()


class HTTPResponseCycle:
    """Checks the app's ``http.response.*`` messages and turns them into outbound events.

    The response head is held back until the first body message so that a small response
    leaves in one write (and a 500 can still replace it if the app fails in between). The
    runner releases it earlier, with :meth:`release_head`, once the app waits on anything
    else: a streaming response (SSE) must not keep the client waiting for its head.
    """

    __slots__ = (
        "_extensions",
        "_no_body",
        "_trailers",
        "bytes_sent",
        "default_headers",
        "file_path",
        "held_head",
        "is_head",
        "state",
        "status",
    )

    def __init__(
        self,
        *,
        is_head: bool,
        default_headers: Headers,
        extensions: dict[str, Any] = _EXTENSIONS_10,
    ) -> None:
        self.state = START
        self.is_head = is_head
        self._no_body = is_head  # HEAD, 204 and 304: body bytes are dropped
        self.default_headers = default_headers
        self.status = 0
        # The response head, held until the first body message (or until the runner
        # releases it because the app waits: see ``release_head``).
        self.held_head: Response | None = None
        self.bytes_sent = 0
        self._extensions = extensions
        self._trailers: Headers | None = None  # the app announced trailers: collected here
        # http.response.pathsend: the file the runner sends as the body (then EndData).
        self.file_path: str | None = None

    @property
    def no_body(self) -> bool:
        """The response carries no body (HEAD, 204, 304): body bytes are dropped."""
        return self._no_body

    @property
    def started(self) -> bool:
        """True once a response head exists (sent, or held back until the first body)."""
        return self.state != START

    def release_head(self) -> None:
        """The held head went out on its own: the first body is no longer checked against
        its Content-Length here (the protocol layer still refuses a wrong length)."""
        self.held_head = None

    def on_message(self, message: Any) -> list[OutboundEvent]:
        """Return the events to send for one app message; raise on a wrong message."""
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise UnexpectedMessage(f"ASGI message without a type: {message!r}") from None
        if self.state == BODY and kind == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self._no_body:
                body = b""
            elif body and type(body) is not bytes:  # (exact bytes, the usual body, as is)
                if not isinstance(body, (bytes, bytearray, memoryview)):
                    raise UnexpectedMessage(f"body must be bytes, got {type(body).__name__}")
                body = bytes(body)
            head = self.held_head
            if head is None:
                events: list[OutboundEvent] = []
            else:
                # Checked before the head is released: while it is held, a 500 can still
                # replace it (the protocol layer would reject these once it is out).
                if not self._no_body:
                    self._check_length(head, len(body), more)
                events = [head]
                self.held_head = None
            if body:
                self.bytes_sent += len(body)
                events.append(Data(body))
            if not more:
                if self._trailers is not None:
                    self.state = TRAILERS
                else:
                    self.state = DONE
                    events.append(_END_OF_BODY)
            return events
        return self._other_message(kind, message)

    def _other_message(self, kind: str, message: Any) -> list[OutboundEvent]:
        if self.state == START and kind == "http.response.start":
            status = message.get("status")
            if type(status) is not int or not 100 <= status <= 599:
                raise UnexpectedMessage(f"invalid response status {status!r}")
            if status < 200:
                raise UnexpectedMessage("informational responses cannot be sent by the app")
            headers = checked_headers(message.get("headers", []))
            if defaults := self.default_headers:
                # (loops, not a set and a generator: no calls for the usual few headers)
                given = headers[:]
                for default in defaults:
                    name = default[0]
                    for other, _ in given:
                        if other == name:
                            break
                    else:
                        headers.append(default)
            self.status = status
            if status == 204 or status == 304:  # no body, whatever the app sends (RFC 9110)
                self._no_body = True
            self.held_head = Response(status, headers)
            self.state = BODY
            if message.get("trailers", False):
                self._trailers = []
            return []
        if self.state == TRAILERS and kind == "http.response.trailers":
            return self._on_trailers(message)
        if self.state == START and kind == "http.response.early_hint":
            return self._on_early_hint(message)
        if self.state == BODY and kind == "http.response.pathsend":
            return self._on_pathsend(message)
        if self.state == DONE:
            raise UnexpectedMessage(f"{kind!r} sent after the response was complete")
        expected = {START: "http.response.start", TRAILERS: "http.response.trailers"}.get(
            self.state, "http.response.body"
        )
        raise UnexpectedMessage(f"expected {expected!r}, got {kind!r}")

    @staticmethod
    def _check_length(head: Response, size: int, more: bool) -> None:
        """The first body against the head's Content-Length: too much, or (last) too little."""
        for name, value in head.headers:
            if name == b"content-length":
                if not value.isdigit():
                    return
                declared = int(value)
                if size > declared or (not more and size < declared):
                    raise UnexpectedMessage(
                        f"body of {size} bytes{'' if more else ' in total'} for "
                        f"Content-Length {declared}"
                    )
                return

    def _on_trailers(self, message: Any) -> list[OutboundEvent]:
        headers = checked_headers(message.get("headers", []))
        trailers = self._trailers
        assert trailers is not None
        trailers.extend(headers)
        if message.get("more_trailers", False):
            return []
        self.state = DONE
        # Not advertised (or no body: HEAD, 204, 304): the trailers are accepted and dropped.
        if TRAILERS_EXT not in self._extensions or self._no_body:
            trailers = []
        return [EndData(trailers)]

    def _on_early_hint(self, message: Any) -> list[OutboundEvent]:
        links = message.get("links", [])
        if not isinstance(links, (list, tuple)) or not all(
            isinstance(link, bytes) for link in links
        ):
            raise UnexpectedMessage("early_hint links must be a list of bytes")
        if EARLY_HINT_EXT not in self._extensions or not links:
            return []
        try:
            headers = validate_response_headers([(b"link", link) for link in links])
        except InvalidHeader as exc:
            raise UnexpectedMessage(str(exc)) from None
        return [InformationalResponse(103, headers)]

    def _on_pathsend(self, message: Any) -> list[OutboundEvent]:
        path = message.get("path")
        if not isinstance(path, str):
            raise UnexpectedMessage(f"pathsend path must be a str, got {path!r}")
        events: list[OutboundEvent] = []
        if self.held_head is not None:
            events.append(self.held_head)
            self.held_head = None
        self.file_path = path
        self.state = DONE
        return events
