"""Where a version differs from the contract: by nature (``DIFFERENCES``), or by a bug that
is being fixed (``KNOWN_BUGS``). These are the only two places that say so.

``DIFFERENCES`` is shown in docs/architecture.md ("One contract on every HTTP version");
``test_doc_table.py`` checks that the page and this dict agree. A ``KNOWN_BUGS`` entry makes
its test an ``xfail(strict=True)``: when the fix lands the test passes, the strict xfail
fails, and the entry is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .record import Outcome
from .scenarios import BY_NAME
from .transports import Version

H1 = ("h11", "httptools", "mem-h1")
H2 = ("h2-tls", "h2c", "mem-h2")
MULTIPLEXED = (*H2, "h3")


@dataclass(frozen=True)
class Difference:
    """The fields of the expected outcome that differ on this version, and why."""

    changes: dict[str, Any]
    reason: str


def _each(
    versions: tuple[str, ...], scenario: str, reason: str, **changes: Any
) -> dict[tuple[str, str], Difference]:
    return {(scenario, v): Difference(changes, reason) for v in versions}


DIFFERENCES: dict[tuple[str, str], Difference] = {
    **_each(
        H1,
        "early_hints",
        "HTTP/1.1 advertises the trailers extension only to a request with TE: trailers "
        "(trailers need chunked framing and the client's consent)",
        app=("http.response.early_hint,http.response.pathsend",),
    ),
    **{
        key: value
        for scenario in (
            "ws_keepalive_pings",
            "ws_ping_timeout",
            "ws_max_size",
            "ws_shutdown",
            "ws_app_raises",
        )
        for key, value in _each(
            MULTIPLEXED,
            scenario,
            "a WebSocket over HTTP/2 or HTTP/3 is an extended CONNECT (RFC 8441, RFC 9220), "
            "accepted with 200: there is no 101 to log",
            access=("200",),
        ).items()
    },
}


def _bugs(
    versions: tuple[str, ...], scenarios: tuple[str, ...], bug: str
) -> dict[tuple[str, str], str]:
    return {(s, v): f"issue {bug}" for s in scenarios for v in versions}


# (scenario, version) -> the bug and its issue. Remove an entry when its fix lands (the
# strict xfail then fails, saying so).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def expected(scenario: str, version: Version) -> Outcome:
    """The contract for ``scenario``, with this version's difference applied."""
    outcome = BY_NAME[scenario].expect
    difference = DIFFERENCES.get((scenario, version.name))
    if difference is not None:
        outcome = replace(outcome, **difference.changes)
    return outcome.formatted(http=version.http_version, scheme=version.scheme)


def markdown_table() -> str:
    """``DIFFERENCES`` as the Markdown table docs/architecture.md shows (one row per
    scenario and reason, the versions listed together)."""
    by_change: dict[tuple[str, str], dict[str, list[str]]] = {}
    for (scenario, version), difference in DIFFERENCES.items():
        what = ", ".join(f"{k}: {_show(v)}" for k, v in sorted(difference.changes.items()))
        per_scenario = by_change.setdefault((what, difference.reason), {})
        per_scenario.setdefault(scenario, []).append(version)
    lines = [
        "| scenarios | versions | what differs | why |",
        "| --- | --- | --- | --- |",
    ]
    for (what, reason), scenarios in by_change.items():
        for group in sorted({tuple(v) for v in scenarios.values()}):
            names = ", ".join(f"`{s}`" for s, v in scenarios.items() if tuple(v) == group)
            lines.append(f"| {names} | {', '.join(group)} | {what} | {reason} |")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"`{v}`" for v in value) + ")"
    return f"`{value}`"
