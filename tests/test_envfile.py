"""``--env-file``: the KEY=VALUE reader, without a process."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioserve.config import ConfigError
from trioserve.envfile import load_env_file, parse_env_file


def test_forms_quotes_comments_and_expansion() -> None:
    text = (
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED = spaced  # trailing comment\n"
        "SINGLE='kept $literally # not a comment'\n"
        'DOUBLE="line\\nbreak \\"quoted\\" ${PLAIN}"\n'
        "EXPANDED=${PLAIN}-${FROM_ENV}-${MISSING}\n"
        "EMPTY=\n"
        "URL=http://x/#fragment\n"
    )
    values = parse_env_file(text, {"FROM_ENV": "env"})
    assert values == {
        "PLAIN": "value",
        "EXPORTED": "spaced",
        "SINGLE": "kept $literally # not a comment",
        "DOUBLE": 'line\nbreak "quoted" value',
        "EXPANDED": "value-env-",
        "EMPTY": "",
        "URL": "http://x/#fragment",
    }


def test_bad_line_names_its_number() -> None:
    with pytest.raises(ValueError, match="line 2: expected KEY=VALUE"):
        parse_env_file("A=1\nnot a pair\n", {})


def test_load_keeps_variables_already_set(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=from-file\nB=from-file\n")
    environ = {"A": "already"}
    load_env_file(str(path), environ)
    assert environ == {"A": "already", "B": "from-file"}
    with pytest.raises(ConfigError, match=r"env_file .*missing"):
        load_env_file(str(tmp_path / "missing"), environ)
