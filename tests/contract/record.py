"""The normalised record of one scenario on one version, and how it is read off the server.

Every field is plain data, so a scenario's expectation is a literal and a failure shows the
whole record next to the expected one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from tests.metrics.helpers import Samples

from .transports import ACCESS_FORMAT


@dataclass(frozen=True)
class Outcome:
    client: str  # what the client got, as the scenario's script worded it
    app: tuple[str, ...] = ()  # what the app saw (apps.Recorder.seen)
    access: tuple[str, ...] = ()  # the status field of each access-log line
    errors: int = 0  # records at ERROR or above in the error log
    tracebacks: int = 0  # of those, the ones with a traceback
    metrics: tuple[str, ...] = ()  # counters that moved, without the http_version label
    # The http_version labels of the requests counted; None: not compared (only the
    # http_version_label scenario compares them, so one bug there is one xfail).
    versions: tuple[str, ...] | None = None

    def formatted(self, **values: str) -> Outcome:
        """``{http}`` (or another ``{name}``) in an expected value stands for the version's
        own value: its http_version label, its scheme."""

        def one(item: str) -> str:
            for name, value in values.items():
                item = item.replace("{" + name + "}", value)
            return item

        def fill(items: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(one(item) for item in items)

        return Outcome(
            one(self.client),
            fill(self.app),
            self.access,
            self.errors,
            self.tracebacks,
            self.metrics,
            None if self.versions is None else fill(self.versions),
        )

    def compared_with(self, expected: Outcome) -> Outcome:
        """This record without the fields the expectation leaves open."""
        return self if expected.versions is not None else replace(self, versions=None)


assert ACCESS_FORMAT.endswith("%(s)s")  # access_statuses reads the last field


def access_statuses(records: list[logging.LogRecord]) -> tuple[str, ...]:
    return tuple(
        r.getMessage().rsplit(" ", 1)[-1] for r in records if r.name == "trioserve.access"
    )


def metric_lines(samples: Samples) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The counters that moved (as ``"POST 4xx x1"``, ``"refused 408 x1"``...) and the
    http_version labels of the requests counted."""
    lines: list[str] = []
    versions: set[str] = set()
    for (name, labels), count in samples.items():
        if not count:
            continue
        label = dict(labels)
        if name == "trioserve_requests_total":
            lines.append(f"{label['method']} {label['status_class']} x{count:g}")
            versions.add(label["http_version"])
        elif name == "trioserve_refusals_total":
            lines.append(f"refused {label['reason']} x{count:g}")
        elif name in ("trioserve_app_exceptions_total", "trioserve_websockets_total"):
            lines.append(f"{name[len('trioserve_') : -len('_total')]} x{count:g}")
    return tuple(sorted(lines)), tuple(sorted(versions))


def observe(
    client: str, seen: list[str], records: list[logging.LogRecord], samples: Samples
) -> Outcome:
    errors = [r for r in records if r.name.startswith("trioserve") and r.levelno >= logging.ERROR]
    metrics, versions = metric_lines(samples)
    return Outcome(
        client,
        tuple(seen),
        access_statuses(records),
        len(errors),
        sum(1 for r in errors if r.exc_info),
        metrics,
        versions,
    )
