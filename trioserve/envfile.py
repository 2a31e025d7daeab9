"""``--env-file``: KEY=VALUE lines put into the environment before the app is imported.

Uvicorn does this with python-dotenv; the format needs a few lines, not a dependency. Lines
are ``KEY=VALUE`` or ``export KEY=VALUE``; ``#`` starts a comment (after a space, outside
quotes); values may be quoted ('single' taken literally, "double" with ``\\n``/``\\t``/
``\\"`` escapes); ``${NAME}`` in unquoted and double-quoted values is replaced by an earlier
variable. Variables already in the environment win, as python-dotenv's ``override=False``.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def parse_env_file(text: str, environ: MutableMapping[str, str]) -> dict[str, str]:
    """The file's variables (``${NAME}`` resolved from earlier lines, then ``environ``)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"line {number}: expected KEY=VALUE, got {line.strip()!r}")
        key, raw = match.groups()
        values[key] = _value(raw, {**environ, **values})
    return values


def _value(raw: str, known: dict[str, str]) -> str:
    if raw[:1] == "'" and "'" in raw[1:]:
        return raw[1 : raw.index("'", 1)]
    if raw[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(raw) and raw[i] != '"':
            if raw[i] == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                i += 2
                continue
            out.append(raw[i])
            i += 1
        return _expand("".join(out), known)
    raw = re.split(r"\s+#", raw, maxsplit=1)[0]
    return _expand(raw.strip(), known)


def _expand(value: str, known: dict[str, str]) -> str:
    return _VAR.sub(lambda m: known.get(m.group(1), ""), value)


def load_env_file(path: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Read ``path`` into ``environ`` (``os.environ``); names already set are kept."""
    from .config import ConfigError

    env = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"env_file {path}: {exc.strerror}") from None
    try:
        values = parse_env_file(text, env)
    except ValueError as exc:
        raise ConfigError(f"env_file {path}: {exc}") from None
    for key, value in values.items():
        env.setdefault(key, value)
