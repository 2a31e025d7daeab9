"""Config loading: every Hypercorn key, typos, types, precedence, the CLI and the docs table."""

from __future__ import annotations

import dataclasses
import logging
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trioserve import cli
from trioserve.config import (
    OPTIONS,
    Config,
    ConfigError,
    build_config,
    canonical_key,
    load_config_file,
)
from trioserve.config_docs import config_reference, render_configuration_doc
from trioserve.run import make_config

ROOT = Path(__file__).resolve().parent.parent


def config_notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The configuration's log lines: one record each, on trioserve's error log."""
    return [r.getMessage() for r in caplog.records if r.name == "trioserve.error"]


# Every key of Hypercorn's Config, with a non-default value of the type Hypercorn expects.
HYPERCORN_TOML = """
access_log_format = "%(h)s %(r)s %(s)s"
accesslog = "-"
alpn_protocols = ["http/1.1"]
alt_svc_headers = ['h3=":443"; ma=86400']
application_path = "app:app"
backlog = 2048
bind = ["127.0.0.1:9000", "[::1]:9001", "unix:/tmp/trioserve-test.sock"]
ca_certs = "/etc/ssl/ca.pem"
certfile = "/etc/ssl/cert.pem"
ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"
daemon = false
debug = true
dogstatsd_tags = "env:prod"
errorlog = "/var/log/trioserve/error.log"
graceful_timeout = 7.5
group = 1000
h11_max_incomplete_size = 32768
h11_pass_raw_headers = true
h2_max_concurrent_streams = 50
h2_max_header_list_size = 32768
h2_max_inbound_frame_size = 32768
include_date_header = false
include_server_header = false
insecure_bind = "127.0.0.1:8080"
keep_alive_max_requests = 500
keep_alive_timeout = 15
keyfile = "/etc/ssl/key.pem"
keyfile_password = "secret"
logconfig = "logging.ini"
loglevel = "WARNING"
max_app_queue_size = 20
max_requests = 10000
max_requests_jitter = 100
pid_path = "/run/trioserve.pid"
quic_bind = ["127.0.0.1:4433"]
read_timeout = 30
root_path = "/api/"
server_names = ["example.com", "www.example.com"]
shutdown_timeout = 20
ssl_handshake_timeout = 10
startup_timeout = 30
statsd_host = "localhost:8125"
statsd_prefix = "web"
umask = 0o077
use_reloader = true
user = 1000
verify_flags = 32
verify_mode = 2
websocket_max_message_size = 1048576
websocket_ping_interval = 25.0
worker_class = "trio"
workers = 4
wsgi_max_body_size = 1024

[logconfig_dict]
version = 1
"""

# Where Hypercorn keeps a different Python type for the same meaning.
NORMALISED: dict[str, Any] = {
    "loglevel": lambda v: v.lower(),
    "verify_mode": lambda v: ssl.VerifyMode(v).name,
    "verify_flags": lambda v: ssl.VerifyFlags(v).name,
}


def hypercorn_keys() -> set[str]:
    import hypercorn.config as hypercorn_config

    keys = set()
    for name in dir(hypercorn_config.Config):
        if name.startswith("_") or name in {"log", "ssl_enabled", "logger_class"}:
            continue
        if callable(getattr(hypercorn_config.Config, name)):
            continue
        keys.add(name)
    return keys


def test_sample_covers_every_hypercorn_key(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(HYPERCORN_TOML)
    data = load_config_file(str(path))
    missing = hypercorn_keys() - set(data) - {"cert_reqs"}
    assert not missing, f"sample lacks Hypercorn keys: {sorted(missing)}"


def test_every_hypercorn_key_loads_with_hypercorns_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hypercorn.config import Config as HypercornConfig

    path = tmp_path / "h.toml"
    path.write_text(HYPERCORN_TOML)
    theirs = HypercornConfig.from_toml(path)
    from trioserve import config as config_module

    config_module._warned.clear()
    with caplog.at_level(logging.INFO, logger="trioserve.error"):
        ours = build_config(config_file=str(path), environ={})
    for key in sorted(hypercorn_keys() - {"cert_reqs"}):
        expected = getattr(theirs, key)
        expected = NORMALISED.get(key, lambda v: v)(expected)
        assert getattr(ours, key) == expected, key
    # The unimplemented keys each warned once, by name.
    warned = " ".join(config_notices(caplog))
    for key in ("wsgi_max_body_size",):
        assert repr(key) in warned


def test_unimplemented_key_warns_once_and_only_when_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trioserve import config as config_module

    config_module._warned.clear()
    # (alt_svc_headers was the example here until HTTP/3 implemented it.)
    with caplog.at_level(logging.INFO, logger="trioserve.error"):
        Config.from_mapping({"wsgi_max_body_size": 1024})
        Config.from_mapping({"wsgi_max_body_size": 2048})  # already warned
        Config.from_mapping({"h2_max_inbound_frame_size": 2**14})  # default: no warning
    [notice] = config_notices(caplog)
    assert "'wsgi_max_body_size'" in notice and "no effect" in notice


def test_typo_names_the_closest_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('keep_alive_timout = 5\nbind = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError) as info:
        build_config(config_file=str(path), environ={})
    message = str(info.value)
    assert "keep_alive_timout" in message
    assert "did you mean 'keep_alive_timeout'" in message
    assert str(path) in message
    # In the environment (shared with others) an unknown name is a warning, not an error.
    with caplog.at_level(logging.INFO, logger="trioserve.error"):
        config = build_config(environ={"TRIOSERVE_GRACEFULL_TIMEOUT": "3"})
    [notice] = config_notices(caplog)
    assert "TRIOSERVE_GRACEFULL_TIMEOUT (did you mean TRIOSERVE_GRACEFUL_TIMEOUT?)" in notice
    assert config.graceful_timeout == Config().graceful_timeout


def test_type_errors_name_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('keep_alive_timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        build_config(config_file=str(path), environ={})
    assert "'keep_alive_timeout'" in str(info.value)
    assert str(path) in str(info.value)
    for nan in ("nan", "NaN"):  # float() takes it; a deadline of NaN never passes
        path.write_text(f'keep_alive_timeout = "{nan}"\n')
        with pytest.raises(ConfigError, match="'keep_alive_timeout'.*must be a number"):
            build_config(config_file=str(path), environ={})
    with pytest.raises(ConfigError, match="'keep_alive_timeout'.*must be a number"):
        build_config(environ={"TRIOSERVE_KEEP_ALIVE_TIMEOUT": "nan"})
    path.write_text("workers = [1]\n")
    with pytest.raises(ConfigError, match=r"'workers' \(from .*bad.toml\)"):
        build_config(config_file=str(path), environ={})
    path.write_text('verify_mode = "SOMETIMES"\n')
    with pytest.raises(ConfigError, match=r"verify_mode.*CERT_REQUIRED"):
        build_config(config_file=str(path), environ={})
    path.write_text('lifespan = "maybe"\n')
    with pytest.raises(ConfigError, match=r"lifespan.*auto, on, off"):
        build_config(config_file=str(path), environ={})
    path.write_text("not toml [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(config_file=str(path), environ={})


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("keep_alive_timeout = 11\ngraceful_timeout = 12\nbacklog = 13\n")
    env = {"TRIOSERVE_GRACEFUL_TIMEOUT": "22", "TRIOSERVE_BACKLOG": "23"}
    config = make_config("m:app", config_file=str(path), environ=env, backlog=33)
    assert config.backlog == 33  # CLI
    assert config.graceful_timeout == 22.0  # environment
    assert config.keep_alive_timeout == 11.0  # file
    assert config.read_timeout is None  # default
    # TRIOSERVE_CONFIG names the file when -c is absent.
    config = make_config("m:app", environ={"TRIOSERVE_CONFIG": str(path)})
    assert config.backlog == 13


def test_env_lists_and_booleans() -> None:
    config = build_config(
        environ={
            "TRIOSERVE_BIND": "127.0.0.1:1,unix:/tmp/x.sock",
            "TRIOSERVE_PROXY_HEADERS": "false",
            "TRIOSERVE_FORWARDED_ALLOW_IPS": "10.0.0.0/8,unix",
            "TRIOSERVE_UMASK": "077",
        }
    )
    assert config.bind == ["127.0.0.1:1", "unix:/tmp/x.sock"]
    assert config.proxy_headers is False
    assert config.forwarded_allow_ips == ["10.0.0.0/8", "unix"]
    assert config.umask == 0o077


def test_python_module_and_file_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "trioserve_conf_mod.py"
    module.write_text(
        textwrap.dedent(
            """
            import os
            bind = "127.0.0.1:7001"
            keep_alive_timeout = 9

            class Settings:
                workers = 3
                loglevel = "DEBUG"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = build_config(config_file="python:trioserve_conf_mod", environ={})
    assert config.bind == ["127.0.0.1:7001"]
    assert config.keep_alive_timeout == 9.0
    config = build_config(config_file="python:trioserve_conf_mod.Settings", environ={})
    assert (config.workers, config.loglevel) == (3, "debug")
    config = build_config(config_file=f"file:{module}", environ={})
    assert config.bind == ["127.0.0.1:7001"]
    with pytest.raises(ConfigError, match="cannot import"):
        build_config(config_file="python:no_such_module_xyz", environ={})
    sys.modules.pop("trioserve_conf_mod", None)


def test_aliases_and_normalisation() -> None:
    config = Config.from_mapping(
        {
            "log-level": "DEBUG",
            "timeout_keep_alive": 3,
            "cert_reqs": 1,
            "root_path": "/x/",
            "verify_flags": "VERIFY_X509_STRICT|verify_crl_check_leaf",
        }
    )
    assert config.loglevel == "debug"
    assert config.keep_alive_timeout == 3.0
    assert config.verify_mode == "CERT_OPTIONAL"
    assert config.root_path == "/x"
    assert config.verify_flags == "VERIFY_X509_STRICT|VERIFY_CRL_CHECK_LEAF"


def test_cli_flags_reach_the_config(tmp_path: Path) -> None:
    parser = cli.build_parser()
    args = vars(
        parser.parse_args(
            [
                "m:app",
                "--host",
                "::1",
                "--port",
                "0",
                "--uds",
                "/tmp/t.sock",
                "--fd",
                "3",
                "--bind",
                "127.0.0.1:5",
                "--forwarded-allow-ips",
                "10.0.0.1,unix",
                "--no-proxy-headers",
                "--proxy-protocol",
                "--limit-concurrency",
                "7",
                "--limit-request-body",
                "1000",
                "--backlog",
                "64",
                "--timeout-keep-alive",
                "2",
                "--log-format",
                "json",
                "--ssl-certfile",
                "c.pem",
                "--ssl-cert-reqs",
                "2",
                "--h11-max-incomplete-event-size",
                "4096",
                "--server-name",
                "a.test",
                "--server-name",
                "b.test",
            ]
        )
    )
    app = args.pop("app")
    config = make_config(app, environ={}, **args)
    assert config.bind == ["[::1]:0", "127.0.0.1:5", "unix:/tmp/t.sock", "fd://3"]
    assert config.forwarded_allow_ips == ["10.0.0.1", "unix"]
    assert config.proxy_headers is False
    assert config.proxy_protocol is True
    assert config.limit_concurrency == 7
    assert config.max_request_body_size == 1000
    assert config.backlog == 64
    assert config.keep_alive_timeout == 2.0
    assert config.log_format == "json"
    assert config.certfile == "c.pem"
    assert config.verify_mode == "CERT_REQUIRED"
    assert config.h11_max_incomplete_size == 4096
    assert config.server_names == ["a.test", "b.test"]


def test_every_option_has_help_and_a_type_the_loaders_know() -> None:
    for name, field in OPTIONS.items():
        assert field.metadata["help"], name
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )  # type: ignore[misc]
        if default is not None:
            Config.from_mapping({name: default})


def test_docs_table_is_current() -> None:
    """docs/configuration.md embeds the generated table: regenerate with
    ``python -m trioserve.config_docs > docs/configuration.md`` when this fails."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == render_configuration_doc(), (
        "docs/configuration.md is stale: "
        "run `python -m trioserve.config_docs > docs/configuration.md`"
    )
    table = config_reference()
    for name in OPTIONS:
        assert f"`{name}`" in table


def test_forwarded_allow_ips_from_the_environment_as_uvicorn_and_gunicorn(
    tmp_path: Path,
) -> None:
    config = make_config("m:app", environ={"FORWARDED_ALLOW_IPS": "10.1.0.0/16, unix"})
    assert config.forwarded_allow_ips == ["10.1.0.0/16", "unix"]
    # A default: the config file, TRIOSERVE_* and flags still win.
    path = tmp_path / "c.toml"
    path.write_text('forwarded_allow_ips = ["10.2.0.1"]\n')
    config = make_config(
        "m:app", config_file=str(path), environ={"FORWARDED_ALLOW_IPS": "10.1.0.0/16"}
    )
    assert config.forwarded_allow_ips == ["10.2.0.1"]
    config = make_config(
        "m:app", environ={"FORWARDED_ALLOW_IPS": "*"}, forwarded_allow_ips="192.0.2.1"
    )
    assert config.forwarded_allow_ips == ["192.0.2.1"]


def test_forwarded_headers_option() -> None:
    assert Config().forwarded_headers == ["x-forwarded-for", "x-forwarded-proto"]
    config = make_config("m:app", environ={}, forwarded_headers="X-Forwarded-Host,forwarded")
    assert config.forwarded_headers == ["x-forwarded-host", "forwarded"]
    with pytest.raises(ConfigError, match="'x-real-ip' is not one of"):
        make_config("m:app", environ={}, forwarded_headers=["x-real-ip"])


KUBERNETES_SERVICE_ENV = {
    # What Kubernetes puts into every pod of a namespace with a Service named "trioserve".
    "TRIOSERVE_SERVICE_HOST": "10.96.0.12",
    "TRIOSERVE_SERVICE_PORT": "8000",
    "TRIOSERVE_SERVICE_PORT_HTTP": "8000",
    "TRIOSERVE_PORT": "tcp://10.96.0.12:8000",
    "TRIOSERVE_PORT_8000_TCP": "tcp://10.96.0.12:8000",
    "TRIOSERVE_PORT_8000_TCP_PROTO": "tcp",
    "TRIOSERVE_PORT_8000_TCP_PORT": "8000",
    "TRIOSERVE_PORT_8000_TCP_ADDR": "10.96.0.12",
}


def test_kubernetes_service_variables_warn_and_do_not_stop_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="trioserve.error"):
        config = make_config("m:app", environ={**KUBERNETES_SERVICE_ENV, "TRIOSERVE_BACKLOG": "7"})
    assert config.backlog == 7  # real settings still apply
    assert config.bind == ["127.0.0.1:8000"]  # TRIOSERVE_PORT=tcp://... changed nothing
    # One line naming them all: TRIOSERVE_PORT (a real setting with a value that is no
    # port) and the rest, each as a service variable, none with a "did you mean".
    [message] = config_notices(caplog)
    assert "TRIOSERVE_PORT='tcp://10.96.0.12:8000' (not a number)" in message
    for name in KUBERNETES_SERVICE_ENV:
        assert name in message
    assert "TRIOSERVE_SERVICE_HOST (a Kubernetes service variable?)" in message
    assert "did you mean" not in message
    # A typo in a file or a flag stays an error.
    with pytest.raises(ConfigError, match="unknown config key 'service_host'"):
        make_config("m:app", environ={}, service_host="x")


def test_config_built_directly_validates_like_the_loaders() -> None:
    with pytest.raises(ConfigError, match=r"'lifespan' \(from Config\(\)\) must be one of"):
        Config(lifespan="bogus")
    with pytest.raises(ConfigError, match=r"'http' .* must be one of auto, h11, httptools"):
        Config(http="HTTPTOOLS")
    with pytest.raises(ConfigError, match="'http'"):  # refused from a file too, not lowered
        Config.from_mapping({"http": "HTTPTOOLS"}, source="server.toml")
    with pytest.raises(ConfigError, match=r"'workers' .* wrong type"):
        Config(workers="many")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'verify_mode'"):
        Config(verify_mode="SOMETIMES")
    config = Config(loglevel="DEBUG", bind="127.0.0.1:1", root_path="/api/")  # type: ignore[arg-type]
    assert (config.loglevel, config.bind, config.root_path) == ("debug", ["127.0.0.1:1"], "/api")
    assert config.replace(verify_mode="required").verify_mode == "CERT_REQUIRED"


def test_every_cli_flag_is_also_a_key() -> None:
    """Uvicorn's run() keywords are its flag names: each long flag works as a key too."""
    for name, field in OPTIONS.items():
        for flag in field.metadata["cli"]:
            if flag.startswith("--"):
                key = flag[2:].replace("-", "_")
                assert canonical_key(key, source="test") == name, flag
    assert canonical_key("ssl_cert_reqs", source="test") == "verify_mode"
    assert canonical_key("cert_reqs", source="test") == "verify_mode"


def test_headers_setting_in_uvicorn_and_trioserve_forms() -> None:
    config = make_config("m:app", environ={}, headers=[("X-A", "1"), (b"X-B", b"2"), "X-C: 3"])
    assert config.headers == ["X-A:1", "X-B:2", "X-C: 3"]
    with pytest.raises(ConfigError, match=r"'headers'.*must look like NAME:VALUE"):
        make_config("m:app", environ={}, headers=["nocolon"])
    with pytest.raises(ConfigError, match=r"'headers'.*invalid header name"):
        Config(headers=["bad name:1"])


def test_cli_header_without_colon_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["m:app", "--header", "nocolon"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("trioserve: error: 'headers'") and "NAME:VALUE" in err


def test_uvicorn_keywords_and_flags_are_accepted() -> None:
    config = make_config(
        "m:app",
        environ={},
        ws_max_queue=5,
        ws_per_message_deflate=False,
        limit_max_requests=100,
        limit_max_requests_jitter=7,
        timeout_worker_healthcheck=9,
        ssl_version=17,
        ssl_cert_reqs=2,
        h11_max_incomplete_event_size=1234,
        server_header=False,
        date_header=False,
        interface="asgi2",
        env_file=".env",
        log_level=10,
        log_config={"version": 1, "loggers": {}},
        headers=[("X-A", "1")],
        timeout_graceful_shutdown=4,
    )
    assert config.max_app_queue_size == 5
    assert config.websocket_per_message_deflate is False
    assert (config.max_requests, config.max_requests_jitter) == (100, 7)
    assert config.worker_timeout == 9
    assert config.ssl_version == "TLS"
    assert config.verify_mode == "CERT_REQUIRED"
    assert config.h11_max_incomplete_size == 1234
    assert config.include_server_header is False and config.include_date_header is False
    assert config.interface == "asgi2"
    assert config.env_file == ".env"
    assert config.loglevel == "debug"
    assert config.logconfig_dict == {"version": 1, "loggers": {}}
    assert config.graceful_timeout == 4
    assert make_config("m:app", environ={}, log_level=5).loglevel == "trace"
    assert make_config("m:app", environ={}, ssl_version="TLSv1_2").ssl_version == "TLSv1_2"
    with pytest.raises(ConfigError, match=r"requires TLS 1.2"):
        make_config("m:app", environ={}, ssl_version=3)


def test_uvicorn_defaults_for_ping_and_graceful_timeout() -> None:
    config = Config()
    assert config.websocket_ping_interval == 20.0  # as Uvicorn
    assert config.graceful_timeout == 30.0  # Kubernetes' default grace period


def test_interface_wsgi_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["m:app", "--interface", "wsgi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "ASGI apps only" in err and "a2wsgi" in err


def test_cli_bool_flags_take_uvicorn_values() -> None:
    parser = cli.build_parser()
    for argv, expected in (
        (["--ws-per-message-deflate", "false", "m:app"], False),
        (["--ws-per-message-deflate", "true", "m:app"], True),
        (["--ws-per-message-deflate=0", "m:app"], False),
        (["--no-ws-per-message-deflate", "m:app"], False),
        (["--ws-per-message-deflate", "m:app"], True),
    ):
        args = vars(parser.parse_args(cli.expand_bool_values(argv)))
        assert args["websocket_per_message_deflate"] is expected, argv
        assert args["app"] == "m:app"
    args = vars(
        parser.parse_args(
            cli.expand_bool_values(
                [
                    "m:app",
                    "--umask",
                    "007",
                    "--env-file",
                    "e",
                    "--ws-max-queue",
                    "3",
                    "--ssl-version",
                    "17",
                    "--timeout-worker-healthcheck",
                    "4",
                    "--limit-max-requests-jitter",
                    "2",
                    "--interface",
                    "asgi3",
                    "--ssl-cert-reqs",
                    "2",
                    "--h11-max-incomplete-event-size",
                    "99",
                    "--no-server-header",
                    "--no-date-header",
                ]
            )
        )
    )
    app = args.pop("app")
    config = make_config(app, environ={}, **args)
    assert config.umask == 0o007
    assert config.env_file == "e"
    assert config.max_app_queue_size == 3
    assert config.ssl_version == "TLS"
    assert config.worker_timeout == 4
    assert config.max_requests_jitter == 2
    assert config.interface == "asgi3"
    assert config.verify_mode == "CERT_REQUIRED"
    assert config.h11_max_incomplete_size == 99
    assert config.include_server_header is False and config.include_date_header is False


def test_trioserve_host_port_uds_from_the_environment_as_uvicorns() -> None:
    assert make_config("m:app", environ={"TRIOSERVE_PORT": "9001"}).bind == ["127.0.0.1:9001"]
    config = make_config("m:app", environ={"TRIOSERVE_HOST": "::1", "TRIOSERVE_PORT": "9"})
    assert config.bind == ["[::1]:9"]
    config = make_config(
        "m:app", environ={"TRIOSERVE_UDS": "/tmp/a.sock", "TRIOSERVE_BIND": "127.0.0.1:5"}
    )
    assert config.bind == ["127.0.0.1:5", "unix:/tmp/a.sock"]
    # A flag (or run() keyword) naming an address wins over all of them.
    config = make_config("m:app", environ={"TRIOSERVE_PORT": "9001"}, port=7)
    assert config.bind == ["127.0.0.1:7"]
    config = make_config("m:app", environ={"TRIOSERVE_PORT": "9001"}, bind=["unix:/x"])
    assert config.bind == ["unix:/x"]
