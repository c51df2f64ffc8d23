"""Third-party Venice clients, installed from PyPI and pointed at a live `vidgate serve`.

Each test makes one text-to-video job through a client's public API the way its README tells a user
to (only the base URL is changed), waits for it, checks the MP4 it got with PyAV, then lets the
client release the job and checks that the server really dropped the media (a raw retrieve is 404).

Clients (pinned in pyproject's `test` extra):
  venice-py 2.9.0 (`venice_ai`, plus its `venice-py` CLI), venice-cli 0.83.48 (`venice`),
  venice-sdk 0.3.3 (`venice_sdk`), veniceresch 0.6.2 (`veniceresch`).

venice-cli and venice-sdk both declare a `venice` console script, so whichever pip installs last owns
`.venv/bin/venice`; the venice-cli tests therefore run it as `python -m venice`, which is unambiguous.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import av
import httpx
import pytest

if TYPE_CHECKING:
    from conftest import LiveServer

SHORT_PROMPT = "A red fox runs through fresh snow at dawn"
MODEL = "wan-2.5-preview-text-to-video"
FRAME_SIZES = {"480p": (854, 480), "720p": (1280, 720)}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Generous ceilings well inside the 60 s budget: an ultrafast 5 s render takes about a second.
WAIT_S = 40
CLI_TIMEOUT_S = 50


def api_base(server: LiveServer) -> str:
    return f"{server.base_url}/api/v1"


def check_mp4(data: bytes, resolution: str) -> None:
    """A 5 s, 24 fps H.264 clip at the requested size, with an audio track (wan-2.5-preview has audio)."""
    assert data[4:8] == b"ftyp", f"not an MP4: {data[:32]!r}"
    width, height = FRAME_SIZES[resolution]
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(5.0, abs=0.1)
        assert len(container.streams.video) == 1
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (width, height)
        assert video.average_rate == 24
        assert video.frames == 120
        assert len(container.streams.audio) == 1
        audio = container.streams.audio[0]
        assert audio.duration is not None
        assert float(audio.duration * audio.time_base) == pytest.approx(5.0, abs=0.1)


def raw_retrieve(server: LiveServer, queue_id: str) -> httpx.Response:
    with server.client() as client:
        return client.post("/video/retrieve", json={"model": MODEL, "queue_id": queue_id})


def assert_released(server: LiveServer, queue_id: str) -> None:
    response = raw_retrieve(server, queue_id)
    assert response.status_code == 404, (response.status_code, response.headers, response.content[:200])


def cli_env(server: LiveServer, home: Path) -> dict[str, str]:
    """The process env with a scratch HOME, so no user config or state is read or written."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENICE_")}
    env.update(HOME=str(home), VENICE_API_KEY=server.api_key or "", VENICE_BASE_URL=api_base(server),
               XDG_CONFIG_HOME=str(home / ".config"), NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def rendered_job_ids(server: LiveServer) -> list[str]:
    """Queue ids the worker reports having rendered (for a CLI that never prints the id)."""
    assert server.log is not None
    return re.findall(rf"job ({UUID}) completed", server.log.read_text())


# --- venice-py (`venice_ai`) ---------------------------------------------------------------------------


async def test_venice_py_async_run_wait_cancel(live_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """The README flow: `async with await client.video.run(...) as job: status = await job.wait()`.
    Leaving the block after a finished job calls `job.cancel()` (POST /video/complete)."""
    from venice_ai import VeniceClient

    start = time.monotonic()
    async with VeniceClient(api_key=live_server.api_key, base_url=api_base(live_server)) as client:
        async with await client.video.run(model=MODEL, prompt=SHORT_PROMPT, duration_seconds=5,
                                          resolution="720p", aspect_ratio="16:9") as job:
            status = await job.wait(poll_interval=0.5, max_polls=int(WAIT_S / 0.5))
            assert status.status == "COMPLETED"
            assert status.data, "COMPLETED without inline bytes"
            data = bytes(status.data)
            queue_id = job.queue_id
        assert job.is_complete
    check_mp4(data, "720p")
    # The context exit swallows a failed release and only logs it; make that visible.
    problems = [r.getMessage() for r in caplog.records if r.name.startswith("venice_ai") and r.levelname == "WARNING"]
    assert not problems, problems
    assert_released(live_server, queue_id)
    assert time.monotonic() - start < 60


def test_venice_py_sync_submit_retrieve_cancel(live_server: LiveServer) -> None:
    """The low-level synchronous API: submit, poll retrieve, save `status.data`, then cancel."""
    from venice_ai import SyncVeniceClient

    with SyncVeniceClient(api_key=live_server.api_key, base_url=api_base(live_server)) as client:
        queued = client.video.submit(model=MODEL, prompt=SHORT_PROMPT, duration_seconds=5, resolution="480p",
                                     aspect_ratio="16:9")
        deadline = time.monotonic() + WAIT_S
        while True:
            status = client.video.retrieve(model=MODEL, queue_id=queued.queue_id)
            if status.status == "COMPLETED":
                break
            assert status.status == "PROCESSING", status
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.5)
        check_mp4(bytes(status.data or b""), "480p")
        assert client.video.cancel(model=MODEL, queue_id=queued.queue_id).success is True
    assert_released(live_server, queued.queue_id)


# --- venice-sdk (`venice_sdk`) -------------------------------------------------------------------------


def test_venice_sdk_queue_wait_cleanup(live_server: LiveServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from venice_sdk import Config, VeniceClient

    # venice-sdk saves an MP4 it gets from retrieve to $TMPDIR/venice_sdk_videos/video_<id[:8]>.mp4.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    client = VeniceClient(Config(api_key=live_server.api_key, base_url=api_base(live_server)))
    job = client.video.queue(model=MODEL, prompt=SHORT_PROMPT, duration="5s", resolution="480p",
                             aspect_ratio="16:9")
    assert job.job_id
    done = client.video.wait_for_completion(job.job_id, model=MODEL, poll_interval=1, max_wait_time=WAIT_S)
    assert done.is_completed()
    data = done.get_video_data()
    check_mp4(data, "480p")
    assert client.video.cleanup(queue_id=job.job_id, model=MODEL) == {"success": True}
    assert_released(live_server, job.job_id)


# --- veniceresch ---------------------------------------------------------------------------------------


def test_veniceresch_download_complete(live_server: LiveServer) -> None:
    """veniceresch's `wait_for_completion` parses every retrieve as JSON, so it cannot wait for a model
    that answers with MP4 bytes (real Venice does the same); its `download` raises
    VeniceUnexpectedContentTypeError carrying the JSON status while the job runs, so poll with that."""
    from veniceresch import VeniceClient, VeniceUnexpectedContentTypeError

    with VeniceClient(api_key=live_server.api_key, base_url=api_base(live_server)) as client:
        queued = client.video.queue(model=MODEL, prompt=SHORT_PROMPT, duration="5s", resolution="720p",
                                    aspect_ratio="16:9")
        assert queued.download_url is None
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                data = client.video.download(model=MODEL, queue_id=queued.queue_id,
                                             download_url=queued.download_url)
                break
            except VeniceUnexpectedContentTypeError as exc:
                assert isinstance(exc.error_body, dict), exc.error_body
                assert exc.error_body.get("status") in ("QUEUED", "PROCESSING"), exc.error_body
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.5)
        check_mp4(data, "720p")
        assert client.video.complete(model=MODEL, queue_id=queued.queue_id).success is True
    assert_released(live_server, queued.queue_id)


# --- venice-cli (`venice`) -----------------------------------------------------------------------------


def venice_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "venice", *args]


def test_venice_cli_video(live_server: LiveServer, tmp_path: Path) -> None:
    """`venice video PROMPT ... -o out.mp4`: quote, queue, poll, save, then POST /video/complete."""
    out = tmp_path / "out.mp4"
    proc = run_cli(venice_cli("video", SHORT_PROMPT, "--model", MODEL, "--duration", "5s", "--resolution", "480p",
                              "--aspect-ratio", "16:9", "--yes", "--no-balance", "--poll-interval", "0.5",
                              "--max-wait", str(WAIT_S), "-o", str(out)),
                   cli_env(live_server, tmp_path / "home"), tmp_path)
    assert proc.stdout.strip() == str(out.resolve())
    check_mp4(out.read_bytes(), "480p")
    # venice-cli never prints the queue id in the foreground flow; the server's worker log has it.
    [queue_id] = rendered_job_ids(live_server)
    assert_released(live_server, queue_id)


def test_venice_cli_background_then_video_status(live_server: LiveServer, tmp_path: Path) -> None:
    """`venice video --background` prints the queue id; `venice video-status ID` fetches and cleans up."""
    env = cli_env(live_server, tmp_path / "home")
    queued = run_cli(venice_cli("video", SHORT_PROMPT, "--model", MODEL, "--duration", "5s", "--resolution", "720p",
                                "--aspect-ratio", "16:9", "--yes", "--no-balance", "--background"), env, tmp_path)
    queue_id = queued.stdout.strip()
    assert re.fullmatch(UUID, queue_id), queued.stdout
    out = tmp_path / "bg.mp4"
    run_cli(venice_cli("video-status", queue_id, "--model", MODEL, "--poll-interval", "0.5",
                       "--max-wait", str(WAIT_S), "-o", str(out)), env, tmp_path)
    check_mp4(out.read_bytes(), "720p")
    assert_released(live_server, queue_id)


# --- venice-py CLI (`venice-py`) -----------------------------------------------------------------------


def test_venice_py_cli_video_generate(live_server: LiveServer, tmp_path: Path) -> None:
    """`venice-py --config FILE video generate PROMPT -o out.mp4`. Its poll interval is a fixed 5 s.
    When retrieve streams the bytes this CLI saves them and does not call /video/complete (it only
    does after a URL download), so the job is left on the server, and a raw retrieve returns the same
    MP4."""
    config = tmp_path / "venice-py.yaml"
    config.write_text(f"api:\n  base_url: {api_base(live_server)}\n")
    out = tmp_path / "vp.mp4"
    proc = run_cli([str(Path(sys.executable).with_name("venice-py")), "--plain", "--config", str(config), "video",
                    "generate", SHORT_PROMPT, "-m", MODEL, "--duration", "5s", "--resolution", "480p",
                    "--aspect-ratio", "16:9", "-o", str(out)],
                   cli_env(live_server, tmp_path / "home"), tmp_path)
    match = re.search(rf"Job ID: ({UUID})", proc.stdout)
    assert match, proc.stdout
    assert "Video saved" in proc.stdout, proc.stdout
    data = out.read_bytes()
    check_mp4(data, "480p")
    again = raw_retrieve(live_server, match.group(1))
    assert again.status_code == 200
    assert again.headers["content-type"].startswith("video/mp4")
    assert again.content == data
