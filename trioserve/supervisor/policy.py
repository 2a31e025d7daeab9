"""The supervisor's restart policy in numbers and words: how long to back off after failed
starts, and how a worker's exit reads in the log. Pure functions, tested on their own."""

from __future__ import annotations

import signal

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


def backoff_delay(failures: int) -> float:
    """Seconds to wait before the next start after ``failures`` start-up failures in a row."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
