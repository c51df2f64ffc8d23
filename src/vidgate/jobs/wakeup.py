"""Waking idle workers without a polling sleep: each idle worker listens on a Unix datagram socket in the
data dir's `wake/` folder, and whoever queues a job sends one byte to every socket there.

This works for any number of worker processes on the machine that shares the data dir; a scale-out
deployment on PostgreSQL would use LISTEN/NOTIFY instead. Workers still re-check now and then, so a lost
wake-up only delays a job, never loses it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


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

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
