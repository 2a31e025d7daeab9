"""Scraping helpers shared by the metrics tests."""

from __future__ import annotations

import logging
import re

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def admin_url(records: list[logging.LogRecord]) -> str:
    for record in records:
        match = re.search(r"Metrics and health on (http://\S+)", record.getMessage())
        if match:
            return match.group(1)
    raise AssertionError("the server logged no admin listener")
