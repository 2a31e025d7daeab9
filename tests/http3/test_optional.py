"""aioquic stays optional: nothing imports it unless quic_bind is set, and quic_bind without
it (or without TLS) is refused with a message saying what to do."""

from __future__ import annotations

import importlib.metadata
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


@pytest.mark.parametrize("installed", [None, "1.3.0"])
def test_quic_bind_without_aioquic_is_refused(
    monkeypatch: pytest.MonkeyPatch, installed: str | None
) -> None:
    """Not installed, or 1.3 (the last release for Python 3.10): refused, saying why."""
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name != "aioquic":
            return real(name)
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ConfigError, match=r"1\.7 or later.*pip install 'trioserve\[h3\]'"):
        Config.from_mapping({"quic_bind": ["127.0.0.1:4433"]})


async def test_quic_bind_without_tls_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = Config.from_mapping({"bind": ["127.0.0.1:0"], "quic_bind": ["127.0.0.1:0"]})
    with pytest.raises(ConfigError, match="quic_bind needs TLS"):
        await serve(app, config)
