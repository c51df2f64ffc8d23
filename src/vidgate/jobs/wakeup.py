"""Waking idle workers without a polling sleep.

- SQLite (one machine): each idle worker listens on a Unix datagram socket in the data dir's `wake/` folder,
  and whoever queues a job sends one byte to every socket there (`notify_workers`).
- PostgreSQL (many machines): each worker `LISTEN`s on one connection of its own; the transaction that
  queues a job `NOTIFY`s (`Database.announce_job`), which PostgreSQL delivers when, and only if, it commits.

Workers still re-check now and then (`idle_poll_seconds`: expired leases of dead workers are found that way),
so a lost wake-up only delays a job, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

import psycopg

from vidgate.db import JOBS_CHANNEL, Database, libpq_url

log = logging.getLogger("vidgate.wakeup")


class Wakeups(Protocol):
    async def wait(self, timeout: float) -> None:
        """Return when a job may have been queued, or after `timeout` seconds."""

    def close(self) -> None: ...


def wakeups_for(db: Database, wake_dir: Path, name: str) -> Wakeups:
    if db.dialect == "postgresql":
        return PostgresWakeups(db.url)
    return WakeSocket(wake_dir, name)


def notify_workers(wake_dir: Path) -> int:
    """Poke every listening worker; returns how many sockets were reached."""
    reached = 0
    try:
        names = os.listdir(wake_dir)
    except FileNotFoundError:
        return 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            if not name.endswith(".sock"):
                continue
            path = wake_dir / name
            try:
                sock.sendto(b"!", str(path))
                reached += 1
            except BlockingIOError:
                reached += 1  # its buffer is full of wake-ups already: it will wake
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()  # a dead worker's socket
            except OSError:
                pass
    return reached


class WakeSocket:
    """The listening end, owned by one worker process."""

    def __init__(self, wake_dir: Path, name: str) -> None:
        wake_dir.mkdir(parents=True, exist_ok=True)
        self.path = wake_dir / f"{name}.sock"
        self.path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(64)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        loop.add_reader(self.fileno(), lambda: woken.done() or woken.set_result(None))
        try:
            await asyncio.wait_for(woken, timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(self.fileno())
            self.drain()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


class PostgresWakeups:
    """One LISTEN connection per worker, opened on first use and again after the server went away (while it is
    away, `wait` just sleeps: the worker's claims fail and retry on their own)."""

    def __init__(self, url: str) -> None:
        self.url = libpq_url(url)
        self._conn: psycopg.AsyncConnection[object] | None = None

    async def wait(self, timeout: float) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
                await self._conn.execute(f"LISTEN {JOBS_CHANNEL}")
            async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
            # Several jobs queued while we slept: one claim attempt per job follows anyway; drop the rest.
            async for _ in self._conn.notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            log.warning("job wake-ups: PostgreSQL connection lost (%s); re-listening later", exc)
            await self._close()
            await asyncio.sleep(timeout)

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    def close(self) -> None:
        # Called when the worker stops; the socket goes with the process if the loop is already gone.
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(Exception):
                self._conn.pgconn.finish()
        self._conn = None
