"""Logging setup: --log-config in every format, JSON lines, colours, access log on/off."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trioserve.config import Config, ConfigError
from trioserve.logs import access_log, configure_logging, error_log

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = {
        logger: (list(logger.handlers), logger.level, logger.propagate)
        for logger in (
            error_log,
            access_log,
            logging.getLogger("custom"),
            logging.getLogger("uvicorn"),
            logging.getLogger("uvicorn.error"),
            logging.getLogger("uvicorn.access"),
        )
    }
    yield
    for logger, (handlers, level, propagate) in saved.items():
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def dict_config(log_file: Path) -> dict[str, object]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "plain",
            }
        },
        "loggers": {
            "trioserve.error": {"handlers": ["file"], "level": "INFO", "propagate": False}
        },
    }


def flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.flush()


def test_ini_log_config(tmp_path: Path) -> None:
    log_file = tmp_path / "out.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        textwrap.dedent(
            f"""
            [loggers]
            keys = root, error

            [handlers]
            keys = file

            [formatters]
            keys = plain

            [logger_root]
            handlers =

            [logger_error]
            qualname = trioserve.error
            handlers = file
            level = INFO
            propagate = 0

            [handler_file]
            class = FileHandler
            args = ({str(log_file)!r},)
            formatter = plain

            [formatter_plain]
            format = INI %(levelname)s %(message)s
            """
        )
    )
    configure_logging(Config(logconfig=str(ini)))
    error_log.info("hello ini")
    flush(error_log)
    assert log_file.read_text() == "INI INFO hello ini\n"


@pytest.mark.parametrize("kind", ["json", "toml", "json-prefix"])
def test_dict_log_config_files(tmp_path: Path, kind: str) -> None:
    log_file = tmp_path / "out.log"
    data = dict_config(log_file)
    if kind == "toml":
        path = tmp_path / "logging.toml"
        fmt = data["formatters"]["plain"]["format"]  # type: ignore[index]
        path.write_text(
            textwrap.dedent(
                f"""
                version = 1
                [formatters.plain]
                format = "{fmt}"
                [handlers.file]
                class = "logging.FileHandler"
                filename = {json.dumps(str(log_file))}
                formatter = "plain"
                [loggers."trioserve.error"]
                handlers = ["file"]
                level = "INFO"
                propagate = false
                """
            )
        )
        spec = str(path)
    else:
        path = tmp_path / ("logging.json" if kind == "json" else "logging.cfg")
        path.write_text(json.dumps(data))
        spec = str(path) if kind == "json" else f"json:{path}"
    configure_logging(Config(logconfig=spec))
    error_log.info("hello %s", kind)
    flush(error_log)
    assert log_file.read_text() == f"CUSTOM trioserve.error hello {kind}\n"


def test_yaml_log_config(tmp_path: Path) -> None:
    path = tmp_path / "logging.yaml"
    path.write_text("version: 1\nloggers:\n  custom:\n    level: WARNING\n")
    if importlib.util.find_spec("yaml") is None:
        with pytest.raises(ConfigError, match="PyYAML"):
            configure_logging(Config(logconfig=str(path)))
    else:
        configure_logging(Config(logconfig=str(path)))
        assert logging.getLogger("custom").level == logging.WARNING


def test_logconfig_dict(tmp_path: Path) -> None:
    log_file = tmp_path / "out.log"
    configure_logging(Config(logconfig_dict=dict_config(log_file)))
    error_log.warning("from dict")
    flush(error_log)
    assert "CUSTOM trioserve.error from dict" in log_file.read_text()


def test_bad_log_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        configure_logging(Config(logconfig=str(tmp_path / "missing.ini")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    with pytest.raises(ConfigError, match=r"bad\.json is invalid"):
        configure_logging(Config(logconfig=str(bad)))


def test_json_log_format(tmp_path: Path) -> None:
    log_file = tmp_path / "error.log"
    configure_logging(Config(log_format="json", errorlog=str(log_file)))
    error_log.info("hello %s", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        error_log.exception("failed")
    flush(error_log)
    first, second = (json.loads(line) for line in log_file.read_text().splitlines())
    assert first["message"] == "hello json"
    assert first["level"] == "INFO"
    assert first["logger"] == "trioserve.error"
    assert first["pid"] == os.getpid()
    assert first["time"].endswith("Z")
    assert "ValueError: boom" in second["exception"]


def test_colors_only_when_asked_or_on_a_tty(tmp_path: Path) -> None:
    log_file = tmp_path / "error.log"
    configure_logging(Config(errorlog=str(log_file)))
    error_log.warning("plain")
    configure_logging(Config(errorlog="stdout", use_colors=True))
    handler = error_log.handlers[0]
    record = logging.LogRecord("trioserve.error", logging.WARNING, "", 0, "coloured", (), None)
    text = handler.format(record)
    assert "\x1b[33mWARNING\x1b[0m" in text
    assert record.levelname == "WARNING"  # other handlers still see the plain name
    flush(error_log)
    assert "\x1b[" not in log_file.read_text()


def test_access_log_off_and_to_a_file(tmp_path: Path) -> None:
    access_file = tmp_path / "access.log"
    configure_logging(Config(accesslog=str(access_file)))
    access_log.info("one line")
    flush(access_log)
    assert access_file.read_text() == "one line\n"
    configure_logging(Config(access_log=False))
    assert not access_log.isEnabledFor(logging.INFO)


def test_cli_json_logs_and_access_log_file(tmp_path: Path) -> None:
    access_file = tmp_path / "access.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioserve",
            "examples.hello:app",
            "--port",
            "0",
            "--log-format",
            "json",
            "--access-logfile",
            str(access_file),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = json.loads(proc.stderr.readline())
        assert line["message"].startswith("Running on http://127.0.0.1:")
        url = line["message"].split()[2]
        assert httpx.get(url + "/json-check", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    entry = json.loads(access_file.read_text())
    assert entry["logger"] == "trioserve.access"
    assert '"GET /json-check HTTP/1.1" 200' in entry["message"]


def test_cli_bad_log_config_exits_with_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "examples.hello:app", "--log-config", "nope.ini"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "log config file not found: nope.ini" in result.stderr


def uvicorn_style(log_file: Path) -> dict[str, object]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "plain",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }


def test_uvicorn_log_config_receives_trioserve_records_even_after_a_default_setup(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "uvicorn.log"
    configure_logging(Config())  # a first run() in this process: our own handlers
    configure_logging(Config(logconfig_dict=uvicorn_style(log_file)))
    error_log.info("an error-log line")
    error_log.debug("below uvicorn.error's level")
    from trioserve.sansio.accesslog import AccessLogAtoms, format_access_line

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/p",
        "query_string": b"q=1",
        "http_version": "1.1",
        "client": ("192.0.2.9", 4321),
        "headers": [],
    }
    atoms = AccessLogAtoms(scope, 204, [], 0, 0.001, 0.0)
    access_log.info(format_access_line(Config().access_log_format, atoms))
    for name in ("uvicorn", "uvicorn.access"):
        flush(logging.getLogger(name))
    lines = log_file.read_text().splitlines()
    assert lines == [
        "uvicorn.error INFO an error-log line",
        'uvicorn.access INFO 192.0.2.9:4321 - "GET /p?q=1 HTTP/1.1" 204',
    ]


def test_trioserve_log_config_is_not_forwarded(tmp_path: Path) -> None:
    """A config that sets up trioserve's own loggers keeps them (no double lines)."""
    log_file = tmp_path / "both.log"
    data = uvicorn_style(log_file)
    data["loggers"]["trioserve.error"] = {  # type: ignore[index]
        "handlers": ["file"],
        "level": "INFO",
        "propagate": False,
    }
    configure_logging(Config(logconfig_dict=data))
    error_log.info("once")
    flush(logging.getLogger("uvicorn"))
    assert log_file.read_text().splitlines() == ["trioserve.error INFO once"]


def test_default_setup_shows_uvicorn_error_records(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Config(use_colors=False))
    logging.getLogger("uvicorn.error").warning("from the app")
    logging.getLogger("uvicorn.error").debug("hidden at info")
    err = capsys.readouterr().err
    assert "[WARNING] from the app" in err
    assert "hidden at info" not in err
