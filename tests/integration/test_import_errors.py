"""``load_app``: one precise message per way an app string can be wrong; ASGI 2/3 detection."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from trioserve.errors import AppLoadError
from trioserve.importer import is_asgi3, load_app
from trioserve.testing import open_server


@pytest.fixture
def pkg(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "apps_for_import_tests"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "good.py").write_text(
        "async def app(scope, receive, send):\n    pass\n"
        "class Holder:\n    inner = app\n"
        "def factory():\n    return app\n"
        "def bad_factory():\n    raise KeyError('config missing')\n"
        "def factory_of_junk():\n    return 7\n"
        "value = 3\n"
    )
    (root / "needs_dep.py").write_text("import a_dependency_that_is_not_installed\n")
    (root / "syntax_error.py").write_text("def broken(:\n")
    (root / "raises.py").write_text("raise RuntimeError('settings not configured')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield root
    finally:
        sys.path.remove(str(tmp_path))
        for name in list(sys.modules):
            if name.startswith("apps_for_import_tests"):
                del sys.modules[name]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("apps_for_import_tests.nope:app", "Could not import module"),
        ("not_a_package_anywhere.sub:app", "Could not import module"),
        ("apps_for_import_tests.needs_dep:app", "a_dependency_that_is_not_installed"),
        ("apps_for_import_tests.syntax_error:app", "SyntaxError"),
        ("apps_for_import_tests.raises:app", "settings not configured"),
        ("apps_for_import_tests.good:missing", "Attribute 'missing' not found"),
        ("apps_for_import_tests.good:Holder.gone", "Attribute 'Holder.gone' not found"),
        ("apps_for_import_tests.good:value", "not callable"),
        ("apps_for_import_tests.good", "format"),
        (":app", "format"),
    ],
)
def test_each_failure_has_its_own_one_line_message(pkg: Path, target: str, message: str) -> None:
    with pytest.raises(AppLoadError) as info:
        load_app(target)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_module_vs_missing_dependency_are_told_apart(pkg: Path) -> None:
    with pytest.raises(AppLoadError, match="not found"):
        load_app("apps_for_import_tests.nope:app")
    with pytest.raises(AppLoadError, match="Error importing module") as info:
        load_app("apps_for_import_tests.needs_dep:app")
    assert "not found" not in str(info.value).split(":")[0]


def test_nested_attribute_and_factory(pkg: Path) -> None:
    assert callable(load_app("apps_for_import_tests.good:Holder.inner"))
    assert callable(load_app("apps_for_import_tests.good:factory", factory=True))
    with pytest.raises(AppLoadError, match="config missing"):
        load_app("apps_for_import_tests.good:bad_factory", factory=True)
    with pytest.raises(AppLoadError, match="not callable"):
        load_app("apps_for_import_tests.good:factory_of_junk", factory=True)
    with pytest.raises(AppLoadError, match="not callable"):
        load_app("apps_for_import_tests.good:value", factory=True)


def test_app_dir_is_put_on_sys_path(tmp_path: Path) -> None:
    (tmp_path / "only_in_app_dir.py").write_text("async def app(scope, receive, send): pass\n")
    try:
        assert callable(load_app("only_in_app_dir:app", app_dir=str(tmp_path)))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_in_app_dir", None)


async def asgi3_app(scope: Any, receive: Any, send: Any, *, body: bytes = b"three") -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi3_app(scope, receive, send, body=b"instance")


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await asgi3_app(self.scope, receive, send, body=b"two")


def test_asgi_version_detection() -> None:
    assert is_asgi3(asgi3_app)
    assert is_asgi3(ASGI3Instance())
    assert is_asgi3(functools.partial(asgi3_app, body=b"partial"))
    assert not is_asgi3(ASGI2Class)


@pytest.mark.parametrize(
    ("app", "body"),
    [
        (asgi3_app, "three"),
        (ASGI3Instance(), "instance"),
        (functools.partial(asgi3_app, body=b"partial"), "partial"),
        (ASGI2Class, "two"),
    ],
)
async def test_each_app_style_is_served(app: Any, body: str) -> None:
    async with open_server(app) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.text == body
