"""A log config written for Uvicorn works where Uvicorn is not installed.

Each server runs in a subprocess whose ``import uvicorn`` fails (``sys.modules["uvicorn"]``
is None, as for a package that is not there) before trioserve's CLI starts, and is stopped
by its PID; its log lines are read as the user sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.test_uvicorn_dropin import app_dir, start

__all__ = ["app_dir", "start"]  # fixtures, shared

# The CLI with Uvicorn made unimportable first (the test extra installs it).
NO_UVICORN = (
    "import sys; sys.modules['uvicorn'] = None; "
    "import trioserve.cli; sys.exit(trioserve.cli.main())"
)

# The shape of Uvicorn's own LOGGING_CONFIG (uvicorn/config.py), written out here so this
# test needs no Uvicorn at all.
UVICORN_STYLE = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}

UVICORN_STYLE_INI = """
[loggers]
keys=root,uvicorn,access

[handlers]
keys=default,access

[formatters]
keys=default,access

[logger_root]
level=WARNING
handlers=

[logger_uvicorn]
level=INFO
handlers=default
qualname=uvicorn
propagate=0

[logger_access]
level=INFO
handlers=access
qualname=uvicorn.access
propagate=0

[handler_default]
class=StreamHandler
formatter=default
args=(sys.stderr,)

[handler_access]
class=StreamHandler
formatter=access
args=(sys.stdout,)

[formatter_default]
format=%(levelprefix)s %(message)s
class=uvicorn.logging.DefaultFormatter

[formatter_access]
format=%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s
class=uvicorn.logging.AccessFormatter
"""


def write_config(directory: Path, kind: str) -> Path:
    if kind == "ini":
        path = directory / "logging.ini"
        path.write_text(UVICORN_STYLE_INI)
    elif kind == "yaml":
        yaml = pytest.importorskip("yaml")
        path = directory / "logging.yaml"
        path.write_text(yaml.safe_dump(UVICORN_STYLE))
    else:
        path = directory / "logging.json"
        path.write_text(json.dumps(UVICORN_STYLE))
    return path


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
def test_uvicorn_formatters_without_uvicorn(start: object, app_dir: Path, kind: str) -> None:
    path = write_config(app_dir, kind)
    server = start(  # type: ignore[operator]
        "-c",
        NO_UVICORN,
        "dropin:app",
        "--port",
        "0",
        "--log-config",
        str(path),
        cwd=app_dir,
        script=True,
    )
    [url] = server.wait_ready()
    assert httpx.get(url + "/fmt?x=1", timeout=10).status_code == 200
    server.read_until("app says hello")
    assert server.stop() == 0
    text = server.text
    # DefaultFormatter's %(levelprefix)s: the level name and a colon, padded to 9.
    assert "INFO:     Running on http://127.0.0.1:" in text
    assert "INFO:     app says hello via uvicorn.error" in text
    # AccessFormatter's fields, from the five arguments Uvicorn's access call has.
    assert "INFO:     127.0.0.1:" in text
    assert '- "GET /fmt?x=1 HTTP/1.1" 200 OK' in text
    assert "Logging error" not in text and "Traceback" not in text


def test_a_failing_log_config_names_the_cause(app_dir: Path) -> None:
    config = json.loads(json.dumps(UVICORN_STYLE))
    config["formatters"]["default"]["()"] = "uvicorn_nowhere.logging.DefaultFormatter"
    path = app_dir / "broken.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-c", NO_UVICORN, "dropin:app", "--log-config", str(path)],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "Unable to configure formatter 'default'" in line
    assert "No module named 'uvicorn_nowhere'" in line


def test_help_lists_yaml_among_the_log_config_formats() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert ".yaml/.yml (with PyYAML)" in help_text
