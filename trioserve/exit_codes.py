"""Process exit codes, shared by the runner, the CLI and the supervisor (no import cycle)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the app could not be loaded, or a bind failed
EXIT_USAGE = 2  # a configuration error
EXIT_STARTUP_FAILED = 3  # the app's lifespan startup failed
