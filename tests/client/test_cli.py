"""The client commands (`vidgate generate`, `quote`, `models`, `status`, `jobs`, `cancel`, `download`), run as a
user runs them, against a real `vidgate serve` process tree on a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av

from tests.client.test_sdk import FAST
from tests.conftest import LiveServer, free_port
from vidgate.client import VidgateClient


def vidgate(server: LiveServer, *args: str, key: str | None = None, flags: bool = False,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `vidgate ARGS` with the server's URL and key in the environment (or as --url/--api-key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    key = key or server.api_key or ""
    if flags:
        args = (*args, "--url", server.base_url, "--api-key", key)
    else:
        env.update(VIDGATE_URL=server.base_url, VIDGATE_API_KEY=key)
    env["COLUMNS"] = "200"  # rich tables wide enough that ids are not folded
    return subprocess.run([sys.executable, "-m", "vidgate", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd)


def test_quote_prints_the_price(server: LiveServer) -> None:
    done = vidgate(server, "quote", "--model", "wan-2.5-preview-text-to-video", "--duration", "5s",
                   "--resolution", "720p", flags=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "$0.55"


def test_models_prints_a_table_of_the_catalogue(server: LiveServer) -> None:
    done = vidgate(server, "models")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "wan-3-0-text-to-video " in line)
    assert "text-to-video" in row and "480p" in row


def test_an_api_error_is_one_line_on_stderr_and_exit_1(server: LiveServer) -> None:
    done = vidgate(server, "quote", "--model", "wan-3-0-text-to-video", "--duration", "7s")
    assert done.returncode == 1
    assert done.stderr.startswith("error: 400") and "Traceback" not in done.stderr


def test_an_unreachable_server_is_one_line_on_stderr(server: LiveServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    done = subprocess.run([sys.executable, "-m", "vidgate", "models", "--url", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: http://127.0.0.1:") and "/api/v1" in done.stderr


def test_generate_quotes_queues_follows_and_saves_a_playable_mp4(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "fox.mp4"
    done = vidgate(server, "generate", "--model", FAST["model"], "--prompt", FAST["prompt"], "--duration", "2s",
                   "--resolution", "480p", "--aspect-ratio", "16:9", "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("quote: $") and lines[1].startswith("queued: ") and lines[-1].startswith("saved ")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert container.duration is not None and abs(container.duration / av.time_base - 2.0) < 0.2
        assert (stream.codec_context.width, stream.codec_context.height) == (854, 480)
    queue_id = lines[1].split()[1]
    with VidgateClient(server.base_url, server.api_key) as client:
        assert client.retrieve(FAST["model"], queue_id) == out.read_bytes(), "the server's video, whole"


def test_generate_sends_a_local_image_as_a_data_url(server: LiveServer, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "still.png"
    Image.new("RGB", (640, 360), (200, 30, 30)).save(picture)
    out = tmp_path / "still.mp4"
    done = vidgate(server, "generate", "--model", "wan-2.5-preview-image-to-video", "--prompt", "the sky moves",
                   "--image", str(picture), "--duration", "5s", "--resolution", "480p", "-o", str(out))
    assert done.returncode == 0, done.stderr
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    red, green, _ = frame[frame.shape[0] // 2, frame.shape[1] // 2]
    assert red > 150 and green < 80, "the image's pixels are in the video"


def test_generate_refuses_a_missing_local_image_before_queueing(server: LiveServer, tmp_path: Path) -> None:
    done = vidgate(server, "generate", "--model", "wan-2.5-preview-image-to-video", "--prompt", "x",
                   "--image", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.mp4"))
    assert done.returncode == 1 and "nope.png: no such file" in done.stderr
    assert "queued:" not in done.stdout


def test_status_jobs_cancel_and_download_follow_one_job(server: LiveServer, tmp_path: Path) -> None:
    with VidgateClient(server.base_url, server.api_key) as client:
        # A long render, so that it is still running when canceled.
        slow = client.queue(**{**FAST, "duration": "30s", "resolution": "1080p"})
        quick = client.queue(**FAST)

    status = vidgate(server, "status", quick.queue_id)
    assert status.returncode == 0, status.stderr
    assert f"job:            {quick.queue_id}" in status.stdout and "status:" in status.stdout

    canceled = vidgate(server, "cancel", slow.queue_id)
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.strip() in (f"{slow.queue_id}: canceled", f"{slow.queue_id}: cancel requested")

    saved = tmp_path / "quick.mp4"
    download = vidgate(server, "download", quick.queue_id, "-o", str(saved), flags=True)
    assert download.returncode == 0, download.stderr
    with av.open(str(saved)) as container:
        assert container.streams.video[0].codec_context.height == 480

    listing = vidgate(server, "jobs", "--model", FAST["model"])
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if line.startswith("│ ")
            and len(line.split()) > 2}
    assert "completed" in rows[quick.queue_id] and "canceled" in rows[slow.queue_id]
    again = vidgate(server, "cancel", quick.queue_id)
    assert again.returncode == 1 and "409 JOB_FINISHED" in again.stderr


def test_download_of_an_unknown_job_fails_cleanly(server: LiveServer, tmp_path: Path) -> None:
    done = vidgate(server, "download", "00000000-0000-0000-0000-000000000000", "-o", str(tmp_path / "x.mp4"))
    assert done.returncode == 1 and done.stderr.strip().startswith("error: 404") and "Traceback" not in done.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_keys_create_states_the_accounts_balance(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}

    def keys_create(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vidgate", "keys", "create", "--data-dir", str(tmp_path / "d"),
                               *args], capture_output=True, text=True, env=env, check=True, timeout=60)

    first = keys_create("--balance-usd", "2.5")
    assert "balance: $2.500000" in first.stderr and first.stdout.strip().startswith("vg_")
    account = first.stderr.split()[1].rstrip(",")
    second = keys_create("--account", account, "--balance-usd", "1")
    assert "balance: $3.500000" in second.stderr, "the account's whole balance, not just what was added"
    assert "balance: $0.000000" in keys_create().stderr
