"""Turn ``module:attribute`` into an ASGI 3 callable, with one precise line when it can't."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import AppLoadError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def import_from_string(import_str: str) -> Any:
    module_str, sep, attrs_str = import_str.partition(":")
    if not sep or not module_str or not attrs_str:
        raise AppLoadError(
            f"Import string {import_str!r} must be in format '<module>:<attribute>'."
        )
    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        # Only the module we were asked for being absent is "not found"; a missing
        # dependency imported by the app is an error inside the app.
        missing = exc.name or ""
        if module_str == missing or module_str.startswith(missing + "."):
            raise AppLoadError(f"Could not import module {module_str!r}: not found.") from None
        raise AppLoadError(f"Error importing module {module_str!r}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"Error importing module {module_str!r}: {type(exc).__name__}: {exc}"
        ) from exc
    instance: Any = module
    try:
        for attr in attrs_str.split("."):
            instance = getattr(instance, attr)
    except AttributeError:
        raise AppLoadError(
            f"Attribute {attrs_str!r} not found in module {module_str!r}."
        ) from None
    return instance


def load_app(
    app: Any, *, factory: bool = False, app_dir: str | None = None, interface: str = "auto"
) -> ASGIApp:
    """Resolve an import string or object into an ASGI 3 app (ASGI 2 apps are wrapped)."""
    if isinstance(app, str):
        if app_dir is not None:
            sys.path.insert(0, app_dir)
        target = import_from_string(app)
        name = app
    else:
        target = app
        name = repr(app)
    if factory:
        if not callable(target):
            raise AppLoadError(f"App factory {name!r} is not callable.")
        try:
            target = target()
        except Exception as exc:
            raise AppLoadError(
                f"Error calling app factory {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    if not callable(target):
        raise AppLoadError(f"App {name!r} is not callable.")
    return as_asgi3(target, interface)


def is_asgi3(app: Any) -> bool:
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.iscoroutinefunction(app):  # also sees through functools.partial
        return True
    if inspect.isfunction(app) or inspect.ismethod(app):
        return inspect.iscoroutinefunction(app)
    call = getattr(app, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def as_asgi3(app: Any, interface: str = "auto") -> ASGIApp:
    """ASGI 2 apps (``app(scope)`` returning a coroutine function) are adapted to ASGI 3.

    ``interface`` is Uvicorn's: ``auto`` detects, ``asgi3``/``asgi2`` say it for apps the
    detection gets wrong (a callable object whose ``__call__`` is not itself async).
    """
    if getattr(app, "_trioserve_adapted", False):
        return app  # type: ignore[no-any-return]
    if interface == "asgi3" or (interface == "auto" and is_asgi3(app)):
        return app  # type: ignore[no-any-return]

    async def asgi2_adapter(scope: Scope, receive: Receive, send: Send) -> None:
        instance = app(scope)
        await instance(receive, send)

    asgi2_adapter._trioserve_adapted = True  # type: ignore[attr-defined]
    return asgi2_adapter
