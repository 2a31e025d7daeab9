"""File watchers for ``--reload``: watchfiles when installed, stat polling otherwise.

Both run in a daemon thread and report through a pipe, so the supervisor's one wait call
also wakes up for file changes. Which files count is decided by :class:`FileFilter`, the
same for both watchers.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import Config
from ..logs import error_log

DEFAULT_INCLUDES = ["*.py"]
DEFAULT_EXCLUDES = [".*", "*.py[cod]", "*~", "__pycache__", "node_modules"]


class FileFilter:
    """Which paths under the watched roots trigger a reload.

    A pattern without a slash matches a file name (includes) or any one path component
    below a root (excludes: ``.*`` skips ``.git`` and ``.venv``); a pattern with a slash
    matches the path relative to its root. Includes extend ``*.py``; an include that is
    also a default exclude lifts that exclude.
    """

    def __init__(
        self, roots: Iterable[str], includes: Iterable[str] = (), excludes: Iterable[str] = ()
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        user_includes = list(includes)
        self.includes = DEFAULT_INCLUDES + [p for p in user_includes if p not in DEFAULT_INCLUDES]
        self.excludes = [p for p in DEFAULT_EXCLUDES if p not in user_includes] + list(excludes)

    def _relative(self, path: Path) -> tuple[str, ...] | None:
        for root in self.roots:
            try:
                return path.relative_to(root).parts
            except ValueError:
                continue
        return None

    def excluded(self, path: str | Path) -> bool:
        parts = self._relative(Path(path).absolute())
        if parts is None:
            return True
        rel = "/".join(parts)
        for pattern in self.excludes:
            if "/" in pattern:
                if fnmatch.fnmatch(rel, pattern):
                    return True
            elif any(fnmatch.fnmatch(part, pattern) for part in parts):
                return True
        return False

    def __call__(self, path: str | Path) -> bool:
        if self.excluded(path):
            return False
        p = Path(path).absolute()
        parts = self._relative(p) or (p.name,)
        rel = "/".join(parts)
        return any(
            fnmatch.fnmatch(rel if "/" in pattern else p.name, pattern)
            for pattern in self.includes
        )


class Watcher:
    """A background watcher: ``fileno()`` turns readable when ``take_changes()`` has news."""

    def __init__(self, file_filter: FileFilter) -> None:
        self.filter = file_filter
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._lock = threading.Lock()
        self._changes: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trioserve-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        return self._read_fd

    def take_changes(self) -> list[str]:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            changes, self._changes = sorted(self._changes), set()
        return changes

    def _report(self, paths: Iterable[str]) -> None:
        with self._lock:
            before = len(self._changes)
            self._changes.update(paths)
            grew = len(self._changes) > before
        if grew:
            try:
                os.write(self._write_fd, b"!")
            except (BlockingIOError, OSError):
                pass

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class StatWatcher(Watcher):
    """Fallback: compares (mtime, size) of every included file every ``interval`` seconds."""

    def __init__(self, file_filter: FileFilter, interval: float) -> None:
        super().__init__(file_filter)
        self.interval = max(0.05, interval)
        self._snapshot = self.scan()

    def scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for root in self.filter.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [
                    d for d in dirnames if not self.filter.excluded(os.path.join(dirpath, d))
                ]
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if not self.filter(path):
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found[path] = (st.st_mtime_ns, st.st_size)
        return found

    def poll(self) -> list[str]:
        """One comparison with the previous scan: the changed, added and removed paths."""
        now = self.scan()
        before = self._snapshot
        self._snapshot = now
        return sorted(p for p in now.keys() | before.keys() if now.get(p) != before.get(p))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            changed = self.poll()
            if changed:
                self._report(changed)


class WatchfilesWatcher(Watcher):
    """OS file notifications (inotify, FSEvents, ...) through the watchfiles package."""

    def __init__(self, file_filter: FileFilter, watchfiles: Any) -> None:
        super().__init__(file_filter)
        self._watchfiles = watchfiles

    def _run(self) -> None:
        try:
            for changes in self._watchfiles.watch(
                *[str(r) for r in self.filter.roots],
                watch_filter=lambda _change, path: self.filter(path),
                stop_event=self._stop,
                raise_interrupt=False,
                step=50,
            ):
                self._report(path for _change, path in changes)
        except Exception:  # e.g. out of inotify watches: say so; the server keeps running
            if not self._stop.is_set():
                error_log.exception("File watcher failed; --reload is no longer watching")


def make_watcher(config: Config, *, prefer_watchfiles: bool = True) -> Watcher:
    roots = list(config.reload_dirs) or [os.getcwd()]
    file_filter = FileFilter(roots, config.reload_includes, config.reload_excludes)
    if prefer_watchfiles:
        try:
            watchfiles = importlib.import_module("watchfiles")
        except ImportError:
            error_log.info(
                "watchfiles is not installed (pip install 'trioserve[reload]'); "
                "checking files every %ss",
                config.reload_delay,
            )
        else:
            return WatchfilesWatcher(file_filter, watchfiles)
    return StatWatcher(file_filter, config.reload_delay)
