"""aioquic stays optional: nothing imports it unless quic_bind is set, and quic_bind without
it (or without TLS) is refused with a message saying what to do."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Any

import pytest

from trioserve.config import Config, ConfigError
from trioserve.server.serve import serve


def test_serving_imports_no_aioquic() -> None:
    code = (
        "import sys, trioserve, trioserve.run, trioserve.server.serve, trioserve.testing; "
        "print('aioquic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_quic_bind_without_aioquic_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "aioquic" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"pip install 'trioserve\[h3\]'"):
        Config.from_mapping({"quic_bind": ["127.0.0.1:4433"]})


async def test_quic_bind_without_tls_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = Config.from_mapping({"bind": ["127.0.0.1:0"], "quic_bind": ["127.0.0.1:0"]})
    with pytest.raises(ConfigError, match="quic_bind needs TLS"):
        await serve(app, config)
