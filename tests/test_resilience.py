"""Jobs are never lost: a real `vidgate serve` process tree, killed and restarted in the middle of a render."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import time
from typing import Any

import av
import httpx

from tests.conftest import LiveServer

# Long enough to be caught mid-render on a small machine, short enough to finish twice in a test.
SLOW_JOB = {"model": "wan-2.6-text-to-video", "prompt": "A lighthouse in a storm, waves crashing",
            "duration": "15s", "resolution": "1080p", "aspect_ratio": "16:9", "audio": False}


def job_row(server: LiveServer, queue_id: str) -> dict[str, Any]:
    with sqlite3.connect(server.data_dir / "vidgate.db", timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (queue_id,)).fetchone()
        return dict(row)


def ledger_kinds(server: LiveServer, queue_id: str) -> list[str]:
    with sqlite3.connect(server.data_dir / "vidgate.db", timeout=10) as conn:
        return sorted(r[0] for r in conn.execute("SELECT kind FROM ledger WHERE job_id = ?", (queue_id,)))


def wait_until_rendering(server: LiveServer, queue_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = job_row(server, queue_id)
        if row["status"] == "PROCESSING" and row["progress"] > 0:
            return row
        time.sleep(0.05)
    raise AssertionError(f"job never started rendering: {job_row(server, queue_id)}")


def wait_for_video(client: httpx.Client, queue_id: str, timeout: float = 120) -> bytes:
    deadline = time.time() + timeout
    while time.time() < deadline:
        response = client.post("/video/retrieve", json={"model": SLOW_JOB["model"], "queue_id": queue_id})
        assert response.status_code == 200, response.text
        if response.headers["content-type"] == "video/mp4":
            return response.content
        time.sleep(0.3)
    raise AssertionError("video never completed")


def assert_full_video(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (1920, 1080)
        assert video.frames == 15 * 24


def test_restart_in_the_middle_of_a_job_loses_nothing(live_server: LiveServer) -> None:
    with live_server.client() as client:
        queue_id = client.post("/video/queue", json=SLOW_JOB).json()["queue_id"]
    wait_until_rendering(live_server, queue_id)

    live_server.stop(signal.SIGKILL)  # a crash: no graceful shutdown, the lease is left dangling
    assert job_row(live_server, queue_id)["status"] == "PROCESSING"
    live_server.start()

    with live_server.client() as client:
        assert_full_video(wait_for_video(client, queue_id))
    row = job_row(live_server, queue_id)
    assert row["status"] == "COMPLETED" and row["attempts"] == 2
    assert ledger_kinds(live_server, queue_id) == ["CHARGE"], "charged once, never refunded"


def test_worker_killed_mid_render_is_retried_and_finished_once(live_server: LiveServer) -> None:
    with live_server.client() as client:
        queue_id = client.post("/video/queue", json=SLOW_JOB).json()["queue_id"]
        row = wait_until_rendering(live_server, queue_id)
        worker_pid = int(row["lease_owner"].rsplit("-", 1)[1])
        assert worker_pid in live_server.worker_pids()
        os.kill(worker_pid, signal.SIGKILL)

        assert_full_video(wait_for_video(client, queue_id))
    row = job_row(live_server, queue_id)
    assert row["status"] == "COMPLETED" and row["attempts"] == 2
    assert not row["lease_owner"].endswith(f"-{worker_pid}"), "another worker finished it"
    assert ledger_kinds(live_server, queue_id) == ["CHARGE"]
    assert worker_pid not in live_server.worker_pids()
    assert len(live_server.worker_pids()) == live_server.workers, "the supervisor replaced the dead worker"
