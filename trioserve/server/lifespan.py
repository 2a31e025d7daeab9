"""The ASGI lifespan protocol: startup before the first connection, shutdown after the last."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import trio

from ..errors import LifespanFailure
from ..importer import ASGIApp
from ..logs import error_log
from ..sansio.asgi import ASGI_VERSION
from .asyncio_bridge import report_needs_asyncio
from .faults import belongs_to_server

_DONE = object()


class Lifespan:
    """Runs the app's lifespan task in a nursery and talks to it over two channels."""

    def __init__(
        self, app: ASGIApp, *, mode: str, startup_timeout: float, shutdown_timeout: float
    ) -> None:
        self.app = app
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._to_app_send, self._to_app = trio.open_memory_channel[dict[str, Any]](1)
        self._from_app_send, self._from_app = trio.open_memory_channel[Any](1)
        self._running = False
        # Shielded, so the app still hears lifespan.shutdown when serve() is cancelled from
        # outside; close() ends it.
        self._scope = trio.CancelScope(shield=True)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        error: BaseException | None = None
        try:
            with self._scope:
                await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            # A SystemExit or custom BaseException from the app's lifespan follows the
            # startup/shutdown failure policy, like any exception; a real Ctrl-C does not.
            if belongs_to_server(exc):
                raise
            error = exc
        finally:
            self._running = False
            # Wake whoever waits for an answer: the app is gone.
            try:
                self._from_app_send.send_nowait((_DONE, error))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _receive(self) -> dict[str, Any]:
        return await self._to_app.receive()

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        await self._from_app_send.send(message)

    def close(self) -> None:
        """End the app's lifespan task (it is shielded from outside cancellation)."""
        self._scope.cancel()

    async def startup(self, nursery: trio.Nursery) -> None:
        """Raise :class:`LifespanFailure` if startup fails or (mode "on") is unsupported."""
        try:
            await self._startup(nursery)
        except BaseException:
            self.close()  # a failed or cancelled startup leaves no shielded task behind
            raise

    async def shutdown(self) -> None:
        try:
            await self._shutdown()
        finally:
            self.close()

    async def _startup(self, nursery: trio.Nursery) -> None:
        if self.mode == "off":
            return
        self._running = True
        nursery.start_soon(self._run)
        await self._to_app_send.send({"type": "lifespan.startup"})
        with trio.move_on_after(self.startup_timeout) as scope:
            answer = await self._from_app.receive()
        if scope.cancelled_caught:
            raise LifespanFailure(f"lifespan startup timed out after {self.startup_timeout}s")
        if isinstance(answer, tuple) and answer[0] is _DONE:
            self.supported = False
            error = answer[1]
            if error is not None:
                report_needs_asyncio(error)
            if self.mode == "on":
                if error is not None:
                    error_log.error("Exception in 'lifespan' protocol", exc_info=error)
                raise LifespanFailure("the app does not support the lifespan protocol")
            if error is not None:
                error_log.info("ASGI 'lifespan' protocol appears unsupported.")
                error_log.debug("lifespan error", exc_info=error)
            return
        kind = answer.get("type")
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            report_needs_asyncio(str(answer.get("message", "")))
            raise LifespanFailure(f"lifespan startup failed: {answer.get('message', '')}")
        raise LifespanFailure(f"unexpected lifespan message during startup: {kind!r}")

    async def _shutdown(self) -> None:
        if not self.supported or not self._running:
            return
        with trio.move_on_after(self.shutdown_timeout) as scope:
            await self._to_app_send.send({"type": "lifespan.shutdown"})
            answer = await self._from_app.receive()
        if scope.cancelled_caught:
            error_log.error("lifespan shutdown timed out after %ss", self.shutdown_timeout)
            return
        if isinstance(answer, tuple) and answer[0] is _DONE:
            if answer[1] is not None:
                error_log.error("Exception in 'lifespan' shutdown", exc_info=answer[1])
            return
        if answer.get("type") == "lifespan.shutdown.failed":
            error_log.error("lifespan shutdown failed: %s", answer.get("message", ""))
