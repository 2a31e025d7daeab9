"""pytest fixtures for testing ASGI apps with trioserve (loaded through ``pytest11``).

The plugin is active wherever trioserve is installed and does nothing until a test asks for
one of its fixtures. They are async fixtures, so they need pytest-trio (``trio_mode = true``
or ``@pytest.mark.trio``); a test that uses them without it fails with a message saying so.

- ``trioserve_server``: ``server = await trioserve_server(app, **config)`` -> a running
  :class:`~trioserve.testing.LiveServer` (real sockets on 127.0.0.1).
- ``trioserve_client``: ``client = await trioserve_client(app_or_server, **config)`` -> an
  ``httpx.AsyncClient`` whose ``base_url`` is a live server.
- ``trioserve_memory_client``: ``client = await trioserve_memory_client(app, **config)`` -> an
  ``httpx.AsyncClient`` on an :class:`~trioserve.testing.InMemoryTransport`.

Each server or client lives until the test ends; then it shuts down (lifespan shutdown runs)
and an exception the app raised and the test didn't already see fails the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

# trio, httpx and the server are imported inside the fixtures: this module is loaded into
# every pytest run of every project that has trioserve installed, and must cost ~nothing.
if TYPE_CHECKING:
    import httpx
    import trio

    from .live import LiveServer

T = TypeVar("T")

FIXTURES = frozenset({"trioserve_server", "trioserve_client", "trioserve_memory_client"})

_NEEDS_PYTEST_TRIO = (
    "the trioserve fixtures ({names}) are async fixtures and need pytest-trio: "
    "`pip install pytest-trio` and set `trio_mode = true` in your pytest configuration"
)
_NEEDS_TRIO_TEST = (
    "the trioserve fixtures ({names}) run in trio: make this an `async def` test under "
    "pytest-trio's `trio_mode = true`, or mark it `@pytest.mark.trio`"
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail early and clearly instead of with pytest's generic async-fixture error."""
    used = FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if not used:
        return
    names = ", ".join(sorted(used))
    if not item.config.pluginmanager.hasplugin("trio"):
        pytest.fail(_NEEDS_PYTEST_TRIO.format(names=names), pytrace=False)
    if item.get_closest_marker("trio") is None:
        pytest.fail(_NEEDS_TRIO_TEST.format(names=names), pytrace=False)


class _Keeper:
    """Keeps async context managers open in the fixture's own task until teardown.

    trio wants a nursery to be exited by the task that entered it, and a test's task is not
    its fixture's. So each context manager runs in a task of the fixture's nursery, hands its
    value back through ``nursery.start``, and exits there when the fixture tears down.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        import trio

        self._nursery = nursery
        self._stop = trio.Event()

    async def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        result: T = await self._nursery.start(self._hold, manager)
        return result

    async def _hold(
        self, manager: AbstractAsyncContextManager[T], task_status: trio.TaskStatus[T]
    ) -> None:
        async with manager as value:
            task_status.started(value)
            await self._stop.wait()

    def close(self) -> None:
        self._stop.set()


@pytest.fixture
async def trioserve_server() -> AsyncIterator[Callable[..., Awaitable[LiveServer]]]:
    """Factory: ``server = await trioserve_server(app, **config)`` starts a live server."""
    import trio

    from .live import open_server

    async with trio.open_nursery() as nursery:
        keeper = _Keeper(nursery)

        async def start(app: Any, **options: Any) -> LiveServer:
            return await keeper.enter(open_server(app, **options))

        yield start
        keeper.close()


@pytest.fixture
async def trioserve_client(
    trioserve_server: Callable[..., Awaitable[LiveServer]],
) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Factory: ``client = await trioserve_client(app_or_server, **config)``.

    Given an app, starts a live server for it (``config`` are its options); given a
    :class:`~trioserve.testing.LiveServer`, binds to that one.
    """
    import httpx

    from .live import LiveServer

    async with AsyncExitStack() as stack:

        async def make(target: Any, **options: Any) -> httpx.AsyncClient:
            server = target if isinstance(target, LiveServer) else None
            if server is None:
                server = await trioserve_server(target, **options)
            elif options:
                raise TypeError("config options apply to a new server, not to a running one")
            return await stack.enter_async_context(httpx.AsyncClient(base_url=server.url))

        yield make


@pytest.fixture
async def trioserve_memory_client() -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Factory: ``client = await trioserve_memory_client(app, **config)``, no sockets.

    ``base_url`` (default ``http://testserver``) and ``raise_app_exceptions`` are accepted
    along with config keys.
    """
    import trio

    from .memory import open_memory_client

    async with trio.open_nursery() as nursery:
        keeper = _Keeper(nursery)

        async def make(app: Any, **options: Any) -> httpx.AsyncClient:
            return await keeper.enter(open_memory_client(app, **options))

        yield make
        keeper.close()
