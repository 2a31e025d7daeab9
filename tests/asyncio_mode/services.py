"""A real PostgreSQL and a real Redis for the asyncio-mode tests, started here and stopped by PID.

Both listen on unix sockets in a temporary directory (no port to race for). PostgreSQL's
``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user
that the Debian package creates. Missing binaries skip the tests with the Debian package to
install; ``.ci/run`` installs both and sets ``CI_REQUIRE_SERVICES=1``, which turns such a skip
into a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432): TCP is off


def missing(program: str, package: str) -> None:
    """Skip (or, under CI_REQUIRE_SERVICES, fail): ``program`` is not installed."""
    reason = f"{program} not found: install the Debian package {package}"
    if os.environ.get("CI_REQUIRE_SERVICES"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """Debian keeps the server programs in /usr/lib/postgresql/VERSION/bin, off PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    found = candidates[-1] if candidates else shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass(frozen=True)
class Postgres:
    socket_dir: str

    @property
    def dsn(self) -> str:
        """asyncpg's DSN: user ``test``, database ``postgres``, over the unix socket."""
        return f"postgresql://test@/postgres?host={self.socket_dir}&port={PG_PORT}"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+asyncpg://test@/postgres?host={self.socket_dir}&port={PG_PORT}"


@dataclass(frozen=True)
class Redis:
    socket_path: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in 30 s:\n{log.read_text()}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def run_postgres() -> Iterator[Postgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        missing("initdb/postgres", "postgresql")
    assert bin_dir is not None
    user: str | None = None
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the package's user
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing("the postgres user", "postgresql")
    with tempfile.TemporaryDirectory(prefix="trioserve-pg-") as tmp:
        data, sockets, log = Path(tmp, "data"), Path(tmp, "sock"), Path(tmp, "postgres.log")
        sockets.mkdir()
        if user is not None:
            os.chmod(tmp, 0o755)
            shutil.chown(tmp, user)
            shutil.chown(sockets, user)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "test", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=user,
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-k",
                    str(sockets),
                    "-p",
                    str(PG_PORT),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=50",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=user,
            )
        try:
            _wait(lambda: Path(sockets, f".s.PGSQL.{PG_PORT}").exists(), "postgres", proc, log)
            ready = [str(bin_dir / "pg_isready"), "-q", "-h", str(sockets), "-p", str(PG_PORT)]
            _wait(lambda: subprocess.run(ready).returncode == 0, "postgres", proc, log)
            yield Postgres(str(sockets))
        finally:
            _stop(proc)


@contextmanager
def run_redis() -> Iterator[Redis]:
    server = shutil.which("redis-server")
    if server is None:
        missing("redis-server", "redis-server")
    assert server is not None
    with tempfile.TemporaryDirectory(prefix="trioserve-redis-") as tmp:
        socket_path, log = Path(tmp, "redis.sock"), Path(tmp, "redis.log")
        args = [server, "--port", "0", "--unixsocket", str(socket_path), "--save", ""]
        args += ["--appendonly", "no", "--dir", tmp, "--logfile", str(log)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            log.touch()
            _wait(socket_path.exists, "redis-server", proc, log)
            yield Redis(str(socket_path))
        finally:
            _stop(proc)
