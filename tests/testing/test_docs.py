"""The tutorial in docs/testing.md runs as written (its app and tests, through pytester)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .test_plugin import run

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def tutorial_files() -> dict[str, str]:
    """Python blocks whose first line is ``# NAME.py``, concatenated per file in order."""
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# (\w+\.py)", first)
        if match:
            files[match[1]] = files.get(match[1], "") + rest
        elif "async def test_" in block:  # a later part of the test module
            files["test_main.py"] = files.get("test_main.py", "") + "\n\n" + block
    return files


def test_tutorial_runs(pytester: pytest.Pytester) -> None:
    files = tutorial_files()
    assert set(files) == {"main.py", "test_main.py"}
    pytester.makeini("[pytest]\ntrio_mode = true\n")  # as the tutorial says
    for name, source in files.items():
        pytester.makepyfile(**{name[:-3]: source})
    pytester.syspathinsert()
    result = run(pytester)
    result.assert_outcomes(passed=source_tests(files["test_main.py"]))


def source_tests(source: str) -> int:
    return len(re.findall(r"^async def test_", source, flags=re.M))


# -- every documented trioserve command line (issue 21, item 9) --------------------------------
DOCS = DOC.parent
_COMMAND = re.compile(r"^(?:\$ )?(?:python -m )?trioserve (.*)$")


def shell_blocks(page: Path) -> list[str]:
    """The shell code blocks of a page (```sh, bash, console, shell, or no language)."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in page.read_text().splitlines():
        fence = re.fullmatch(r"\s*```(\w*)\s*", line)
        if fence and current is None:
            current = [] if fence[1] in ("", "sh", "bash", "console", "shell") else None
            if current is None:
                current = ["<not shell>"]
        elif fence:
            if current[:1] != ["<not shell>"]:
                blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line.strip())
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for each ``trioserve ...`` line in a shell block of docs/*.md
    (backslash continuations joined, a ``$ `` prompt dropped). configuration.md is
    generated from the options themselves."""
    found: list[tuple[str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "configuration.md":
            continue
        for block in shell_blocks(page):
            for line in block.replace("\\\n", " ").splitlines():
                match = _COMMAND.match(line.strip())
                if match:
                    found.append((page.name, match[1]))
    return found


def test_the_docs_show_commands() -> None:
    pages = {page for page, _ in documented_commands()}
    assert {"uvicorn.md", "workers.md", "deployment.md", "http3.md"} <= pages


@pytest.mark.parametrize(("page", "line"), documented_commands())
def test_documented_command_is_taken(page: str, line: str, tmp_path: Path) -> None:
    """Each documented command line parses with trioserve's own command line and builds a
    config (every flag exists and takes that value): what ``trioserve`` does before it
    imports the app and binds."""
    import shlex

    from trioserve.cli import build_parser, expand_bool_values
    from trioserve.run import make_config

    argv = shlex.split(line, comments=True)
    args = vars(build_parser().parse_args(expand_bool_values(argv)))
    app = args.pop("app", None)
    config_file = args.pop("config_file", None)
    if config_file is not None:  # a file the page shows (or describes): an empty one here
        config_file = str(tmp_path / Path(config_file).name)
        Path(config_file).write_text("")
    config = make_config(app, config_file=config_file, environ={}, **args)
    assert config.application_path == app


def test_examples_without_the_fixtures_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The ``async def main()`` examples (plain trio, and HTTP/2 through both helpers) run as
    written against the tutorial's app, each in its own trio.run."""
    import trio

    blocks = [
        block
        for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
        if "async def main():" in block
    ]
    assert len(blocks) == 2 and any("http2=True" in block for block in blocks)
    namespace: dict[str, object] = {"__name__": "docs_testing_md"}
    exec(compile(tutorial_files()["main.py"], "main.py", "exec"), namespace)
    for block in blocks:
        exec(compile(block.replace("trio.run(main)", ""), "testing.md", "exec"), namespace)
        trio.run(namespace["main"])  # type: ignore[arg-type]
    assert "'message': 'hello, you'" in capsys.readouterr().out


def test_uvicorn_options_not_taken_are_the_documented_ones() -> None:
    """docs/uvicorn.md's "Not taken at all" names exactly the Uvicorn options the drop-in
    test lists as not taken, and trioserve's command line refuses each flag among them."""
    from tests.integration.test_uvicorn_dropin import NOT_TAKEN
    from trioserve.cli import build_parser

    text = (DOCS / "uvicorn.md").read_text()
    bullet = text.split("* Not taken at all", 1)[1].split("\n* ", 1)[0]
    bullet = bullet.split("`tests/integration", 1)[0]  # (the sentence after the list)
    while "(" in bullet:  # the reasons, in (possibly nested) parentheses
        bullet = re.sub(r"\([^()]*\)", "", bullet)
    named = re.findall(r"`(--[\w-]+|[a-z_]+)`", bullet)
    assert {name.lstrip("-").replace("-", "_") for name in named} == set(NOT_TAKEN)
    parser = build_parser()
    for flag in (name for name in named if name.startswith("--")):
        with pytest.raises(SystemExit):
            parser.parse_args([flag, "main:app"])


def test_links_are_labelled_with_titles_not_file_names() -> None:
    """A link reads as the page's title ("Architecture"), not its file name
    ("architecture.md"): the site's home page used to be a list of file names.
    (configuration.md is generated by config_docs.py, which has its own words.)"""
    raw = []
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "configuration.md":
            text = page.read_text()
            raw += [f"{page.name}: {m[0]}" for m in re.finditer(r"\[[\w.-]+\.md\]\(", text)]
            raw += [f"{page.name}: {m[0]}" for m in re.finditer(r"\[[a-z0-9]+\]\(\w+\.md", text)]
    assert not raw


# -- documented defaults ----------------------------------------------------------------------
_UNITS = {"s": 1, "bytes": 1, "KiB": 1024, "MiB": 1024 * 1024}


def _documented_value(text: str) -> object:
    """A default as the docs write it (``5 s``, ``16 KiB``, ``off``, ``true``, `` `load` ``);
    ValueError for prose."""
    text = re.sub(r"\(.*?\)", "", text).strip()
    if text in ("off", "none"):
        return None
    if text in ("on", "true", "false"):
        return text != "false"
    quoted = re.fullmatch(r"`(\w+)`", text)
    if quoted:
        return quoted[1]
    number = re.fullmatch(r"([\d.]+)(?: ?(s|bytes|KiB|MiB))?", text)
    if not number:
        raise ValueError(text)
    return float(number[1]) * _UNITS[number[2] or "bytes"]


def documented_defaults() -> list[tuple[str, str, str]]:
    """(page, config key, default cell) for each row of a docs table with a "default"
    column whose first cells name config keys."""
    from trioserve.config import Config

    fields = set(Config.__dataclass_fields__)
    rows: list[tuple[str, str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "configuration.md":
            continue
        column = None
        for line in page.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not line.startswith("|"):
                column = None
            elif "default" in cells:
                column = cells.index("default")
            elif column is not None and not set(line) <= set("|- "):
                keys = [k for k in re.findall(r"`(\w+)`", " ".join(cells[:column])) if k in fields]
                values = re.split(r" / |, ", cells[column])
                if keys and len(keys) == len(values):
                    rows += [(page.name, k, v) for k, v in zip(keys, values, strict=True)]
    return rows


def test_documented_defaults_are_the_configs() -> None:
    from trioserve.config import Config

    config = Config()
    checked, wrong = 0, []
    for page, key, cell in documented_defaults():
        try:
            documented = _documented_value(cell)
        except ValueError:
            continue  # prose ("20 s + 1 s per 500 bytes", "50/s"): read by a person
        actual = getattr(config, key)
        same = (
            (documented is None and actual in (None, 0, False))
            or documented == actual
            or (isinstance(actual, (int, float)) and documented == float(actual))
        )
        checked += 1
        if not same:
            wrong.append(f"{page}: {key} is documented as {cell!r}, but is {actual!r}")
    assert checked >= 25 and not wrong, wrong


def test_uvicorn_flags_said_to_carry_over_exist() -> None:
    """Every flag docs/uvicorn.md's "What carries over" names is one of trioserve's, and its
    ``trioserve.run(...)`` example's keywords build a config."""
    from trioserve.cli import build_parser
    from trioserve.run import make_config

    text = (DOCS / "uvicorn.md").read_text()
    section = text.split("## What carries over", 1)[1].split("\n## ", 1)[0]
    flags = set(re.findall(r"`(--[a-z0-9-]+)", section)) - {"--reload", "--ssl-"}
    ours = set(build_parser()._option_string_actions)
    assert len(flags) > 30 and not flags - ours, sorted(flags - ours)
    example = re.search(r'trioserve\.run\("main:app", (.*)\)\n', text)
    assert example is not None
    keywords = eval(f"dict({example[1]})")  # the documented literal keywords
    assert make_config("main:app", environ={}, **keywords).application_path == "main:app"


# -- documented scripts and extras ----------------------------------------------------------
_SCRIPT = re.compile(r"^(?:[A-Z_]+=\S+ )*\S*python (benchmarks/\w+\.py)(.*)$")


def documented_scripts() -> list[tuple[str, str, str]]:
    """(page, script, arguments) for each ``python benchmarks/X.py ...`` line in a shell
    block of docs/*.md."""
    found: list[tuple[str, str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        for block in shell_blocks(page):
            for line in block.replace("\\\n", " ").splitlines():
                match = _SCRIPT.match(line.strip())
                if match:
                    found.append((page.name, match[1], match[2]))
    return found


class _Parsed(Exception):
    """The script's arguments parsed: stop before it runs anything."""


@pytest.mark.parametrize(("page", "script", "arguments"), documented_scripts())
def test_documented_script_arguments_parse(
    page: str, script: str, arguments: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each documented benchmark command's arguments are the script's (its own argparse
    parses them); the script itself is not run (minutes of load)."""
    import argparse
    import runpy
    import shlex
    import sys

    root = DOCS.parent
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        real_parse(self, *args, **kw)  # type: ignore[call-overload]
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [script, *shlex.split(arguments, comments=True)])
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    modules = set(sys.modules)
    try:
        with pytest.raises(_Parsed):
            runpy.run_path(str(root / script), run_name="__main__")
    finally:  # (benchmarks/profile.py would shadow the stdlib's for later tests)
        bench = str(root / "benchmarks")
        for name in set(sys.modules) - modules:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(bench):
                del sys.modules[name]


def test_documented_extras_exist() -> None:
    """Every ``trioserve[extra]`` / ``.[extra]`` the docs tell people to install exists."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    pyproject = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    named = set()
    for page in DOCS.glob("*.md"):
        for group in re.findall(r"(?:trioserve|\.)\[([\w,]+)\]", page.read_text()):
            named |= set(group.split(","))
    assert named and not named - extras, sorted(named - extras)


def documented_pytest_runs() -> list[tuple[str, dict[str, str], list[str]]]:
    """(page, environment, pytest arguments) for each ``python -m pytest ...`` line."""
    import shlex

    found: list[tuple[str, dict[str, str], list[str]]] = []
    for page in sorted(DOCS.glob("*.md")):
        for block in shell_blocks(page):
            for line in block.replace("\\\n", " ").splitlines():
                match = re.match(r"^((?:[A-Z_]+=\S+ )*)\S*python -m pytest (.*)$", line.strip())
                if match:
                    env = dict(item.split("=", 1) for item in match[1].split())
                    found.append((page.name, env, shlex.split(match[2], comments=True)))
    return found


@pytest.mark.parametrize(("page", "env", "arguments"), documented_pytest_runs())
def test_documented_pytest_run_selects_tests(
    page: str, env: dict[str, str], arguments: list[str]
) -> None:
    """A documented test run selects tests (collected, not run: the fuzz run takes minutes),
    and the tests read each environment variable it sets."""
    import subprocess
    import sys

    root = DOCS.parent
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]  # (5: nothing selected)
    paths = [a for a in arguments if not a.startswith("-") and (root / a).exists()]
    sources = " ".join(p.read_text() for a in paths for p in (root / a).rglob("*.py"))
    assert all(name in sources for name in env), env


_HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


def test_test_snippets_of_other_pages_run(pytester: pytest.Pytester) -> None:
    """The test examples on other pages (http2.md, asyncio.md) run as pytest-trio tests
    against a hello app, with the imports the page's context implies."""
    sources = []
    for name in ("http2.md", "asyncio.md"):
        text = (DOCS / name).read_text()
        blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def test_" in b]
        assert blocks, name
        sources += blocks
    header = "import httpx\nfrom trioserve.testing import open_memory_client, open_server\n"
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(main=_HELLO_APP)
    pytester.makepyfile(test_snippets=header + "from main import app\n\n" + "\n\n".join(sources))
    pytester.syspathinsert()
    result = run(pytester)
    result.assert_outcomes(passed=sum(source.count("def test_") for source in sources))


def test_toml_snippets_are_valid_config(tmp_path: Path) -> None:
    """Every ```toml block in docs/*.md (except the generated page) is a config file that
    loads: known keys, valid values."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from trioserve.config import canonical_key
    from trioserve.run import make_config

    count = 0
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "configuration.md":
            continue
        for block in re.findall(r"^```toml\n(.*?)^```", page.read_text(), re.S | re.M):
            for key in tomllib.loads(block):  # an unknown key is only warned about when loaded
                canonical_key(key, source=page.name)
            path = tmp_path / f"{page.stem}-{count}.toml"
            path.write_text(block)
            make_config(config_file=str(path), environ={})
            count += 1
    assert count
