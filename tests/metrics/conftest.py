from ..supervisor.conftest import start  # noqa: F401 - trioserve in a subprocess, stopped by PID
