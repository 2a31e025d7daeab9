"""gunicorn's raw HTTP/1.1 request corpus: fetched from its sdist on PyPI, cached, decoded.

The corpus (``tests/requests/{valid,invalid}/`` in gunicorn's source distribution, MIT licensed)
is never committed here: the first run downloads the pinned sdist with pip and unpacks only
that folder (and gunicorn's LICENSE) into ``$COMPLIANCE_CACHE`` (default
``~/.cache/trioserve-compliance``). The version is pinned so that a new gunicorn release cannot
change the result of a CI run; raise it on purpose and look at the new files.

Each ``NAME.http`` is a raw request in gunicorn's escaped notation and ``NAME.py`` is Python
that names what gunicorn's parser must produce. The .py files import from gunicorn; they are
run here with a private ``__import__`` that hands them stand-ins, so gunicorn itself is neither
installed nor imported.
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# 27.0.1, the newest release when it was pinned: 62 valid and 81 invalid files, among them
# rfc9112_leading_crlf_01 (one empty line before the request line: ignored),
# rfc9112_leading_crlf_02 (two: refused) and rfc9112_bare_lf_01 (a bare LF ending a field line,
# which RFC 9112 2.2 lets a server accept: MAY_ACCEPT in http_corpus.py).
GUNICORN_VERSION = "27.0.1"
# Not TRIOSERVE_*: trioserve reads every such variable as a setting and refuses unknown ones.
_XDG_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
CACHE = Path(os.environ.get("COMPLIANCE_CACHE") or _XDG_CACHE / "trioserve-compliance")

_ESCAPE = re.compile(rb"\\(r\\n|0|n|t|x[0-9A-Fa-f]{2})")
_ESCAPED = {b"r\\n": b"\r\n", b"0": b"\x00", b"n": b"\n", b"t": b"\t"}


def corpus_dir(version: str = GUNICORN_VERSION, python: str = sys.executable) -> Path:
    """The cached ``tests/requests`` folder of gunicorn ``version``; fetched on first use."""
    target = CACHE / f"gunicorn-{version}-requests"
    if (target / "valid").is_dir() and (target / "invalid").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        sdist = _download_sdist(version, python, Path(tmp))
        staging = Path(tmp) / "requests"
        _extract_requests(sdist, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-unpacked corpus is never seen as cached
    return target


def _download_sdist(version: str, python: str, into: Path) -> Path:
    cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--dest", str(into), f"gunicorn=={version}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    found = sorted(into.glob("gunicorn-*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download gunicorn=={version} produced no sdist in {into}")
    return found[0]


def _extract_requests(sdist: Path, staging: Path) -> None:
    """Unpack ``tests/requests/{valid,invalid}/*`` and LICENSE; nothing else, no odd paths."""
    pattern = re.compile(r"^[^/]+/(?:tests/requests/((?:valid|invalid)/[\w.-]+)|(LICENSE))$")
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            match = pattern.match(member.name)
            if not match or not member.isfile():
                continue
            source = tar.extractfile(member)
            assert source is not None
            dest = staging / (match.group(1) or match.group(2))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read())
    if not (staging / "valid").is_dir():
        raise RuntimeError(f"{sdist.name} has no tests/requests/valid folder")


def decode_http(raw: bytes) -> bytes:
    r"""The bytes a ``.http`` file stands for.

    Literal newlines only wrap long lines and are dropped; ``\r\n``, ``\0``, ``\n``, ``\t`` and
    ``\xHH`` written as text become the bytes they name. Any other backslash is an error, so a
    misread file cannot silently send the wrong request.
    """
    text = raw.replace(b"\n", b"")
    decoded = _ESCAPE.sub(
        lambda m: _ESCAPED.get(m.group(1)) or bytes([int(m.group(1)[1:], 16)]), text
    )
    if b"\\" in _ESCAPE.sub(b"", text):
        raise ValueError("a backslash escape this decoder does not know")
    return decoded


@dataclass
class Expected:
    """What a ``.py`` file says: the requests (valid) or the error's name (invalid)."""

    requests: list[Mapping[str, Any]] = field(default_factory=list)
    error: str = ""
    settings: dict[str, object] = field(default_factory=dict)


class _Config:
    """Stands in for ``gunicorn.config.Config``: records the settings a file needs."""

    def __init__(self) -> None:
        self.settings: dict[str, object] = {}

    def set(self, name: str, value: object) -> None:
        self.settings[name] = value


class _Errors:
    """Stands in for ``gunicorn.http.errors``: any attribute is an exception class by name."""

    def __getattr__(self, name: str) -> type[Exception]:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (Exception,), {})


_STANDINS = {
    "gunicorn.config": SimpleNamespace(Config=_Config),
    "gunicorn.http.errors": _Errors(),
}


def _import(
    name: str,
    globals: Mapping[str, object] | None = None,
    locals: Mapping[str, object] | None = None,
    fromlist: Sequence[str] = (),
    level: int = 0,
) -> Any:
    if name in _STANDINS and fromlist:
        return _STANDINS[name]
    if name.startswith("gunicorn"):
        raise ImportError(f"the corpus runner has no stand-in for {name}")
    return builtins.__import__(name, globals, locals, fromlist, level)


def load_expected(py_file: Path) -> Expected:
    namespace: dict[str, Any] = {
        "__builtins__": {**vars(builtins), "__import__": _import},
        "__name__": "gunicorn_corpus_case",
        "uri": lambda raw: {"raw": raw},
    }
    exec(compile(py_file.read_bytes(), str(py_file), "exec"), namespace)
    request = namespace["request"]
    config = namespace.get("cfg")
    settings = dict(config.settings) if isinstance(config, _Config) else {}
    if isinstance(request, type):
        return Expected(error=request.__name__, settings=settings)
    requests = request if isinstance(request, list) else [request]
    return Expected(requests=requests, settings=settings)


def case_files(corpus: Path, kind: str) -> list[Path]:
    """The ``.http`` files of ``valid`` or ``invalid``, in name order."""
    return sorted((corpus / kind).glob("*.http"))


def load_case(http_file: Path) -> tuple[bytes, Expected]:
    """The raw request and what it should produce, from ``NAME.http`` and ``NAME.py``."""
    return decode_http(http_file.read_bytes()), load_expected(http_file.with_suffix(".py"))
