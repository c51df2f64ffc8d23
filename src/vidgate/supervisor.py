"""Keeps N `vidgate worker` processes alive beside the API server, restarting any that die."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

from vidgate.settings import Settings

log = logging.getLogger("vidgate.supervisor")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the server process dies, so no orphan worker outlives it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class WorkerSupervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ, VIDGATE_DATA_DIR=str(self.settings.data_dir.resolve()))
        return subprocess.Popen(
            [sys.executable, "-m", "vidgate", "worker"], env=env, preexec_fn=_die_with_parent
        )

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        if self.count:
            self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for i, proc in enumerate(self.processes):
                # Exit status 0 is a worker that was asked to stop (SIGTERM to the process group on
                # shutdown); anything else (a crash, SIGKILL) gets a replacement.
                if proc.poll() not in (None, 0) and not self._stopping.is_set():
                    log.warning("worker pid %d exited with %s; starting another", proc.pid, proc.returncode)
                    self.processes[i] = self._spawn()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Ask workers to finish; kill those still busy (their jobs are re-claimed after the lease)."""
        self._stopping.set()
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
