"""Metrics (Prometheus, StatsD), health and readiness: see docs/observability.md."""
