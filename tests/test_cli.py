"""The `vidgate` command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer, api_for, t2v_body
from vidgate.settings import load_settings


def vidgate(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    return subprocess.run([sys.executable, "-m", "vidgate", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, check=check, timeout=60)


async def balance_header(data_dir: Path, key: str) -> str:
    async with api_for(load_settings(data_dir=data_dir)) as api:
        response = await api.post("/video/retrieve", {"model": "m", "queue_id": "q"}, key)
    if response.status_code == 401:
        return "401"
    return response.headers["x-venice-balance-usd"]


async def test_keys_create_list_revoke_and_credit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = vidgate("keys", "create", "--balance-usd", "12.5", "--label", "ci", data_dir=data)
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("vg_")
    assert await balance_header(data, key) == "12.500000"

    listing = vidgate("keys", "list", data_dir=data).stdout
    key_id = key.split("_")[1]
    assert key_id in listing and "active" in listing and key.split("_")[2] not in listing, "never the secret"
    account_id = next(word for word in listing.split() if word.startswith("acct_"))

    credited = vidgate("accounts", "credit", account_id, "--usd", "7.5", data_dir=data)
    assert "20.000000" in credited.stdout
    assert await balance_header(data, key) == "20.000000"

    vidgate("keys", "revoke", key_id, data_dir=data)
    assert await balance_header(data, key) == "401"
    assert vidgate("keys", "revoke", key_id, data_dir=data, check=False).returncode == 1


def test_credit_unknown_account_fails_cleanly(tmp_path: Path) -> None:
    result = vidgate("accounts", "credit", "acct_nope", "--usd", "1", data_dir=tmp_path / "d", check=False)
    assert result.returncode == 1 and "no account" in result.stderr


def test_data_dir_defaults_to_env_var(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env["VIDGATE_DATA_DIR"] = str(tmp_path / "from-env")
    subprocess.run([sys.executable, "-m", "vidgate", "keys", "create"], env=env, check=True,
                   capture_output=True, timeout=60)
    assert (tmp_path / "from-env" / "vidgate.db").exists()


def test_serve_prints_the_first_key_once_and_serves_it(live_server: LiveServer) -> None:
    assert live_server.api_key and live_server.log
    with live_server.client() as client:
        assert client.post("/video/queue", json=t2v_body()).status_code == 200
    live_server.stop()
    first_log = live_server.log.read_text()
    assert first_log.count("vg_") == 1
    live_server.start()
    assert "vg_" not in live_server.log.read_text(), "the key is printed only on the first start"


def test_serve_says_once_which_upscaler_it_uses(live_server: LiveServer) -> None:
    import time

    assert live_server.log is not None
    deadline = time.time() + 30
    while "upscaler:" not in live_server.log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    lines = [line for line in live_server.log.read_text().splitlines() if line.startswith("upscaler:")]
    assert len(lines) == 1, live_server.log.read_text()
    assert "Real-ESRGAN" in lines[0]  # either it runs, or the line says why not and how to fix it


def test_serve_refuses_storage_settings_that_cannot_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    env["VIDGATE_STORAGE_URL"] = "ftp://videos.example/bucket"
    done = subprocess.run([sys.executable, "-m", "vidgate", "serve", "--data-dir", str(tmp_path / "d"), "--port", "1"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "VIDGATE_STORAGE_URL" in done.stderr and "Traceback" not in done.stderr


def test_every_node_says_its_role_version_and_backends_at_start(live_server: LiveServer) -> None:
    import time

    assert live_server.log is not None
    deadline = time.time() + 30
    while "vidgate 0.1.0 worker" not in live_server.log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    text = live_server.log.read_text()
    assert "vidgate 0.1.0 API node with 1 worker; database: sqlite; storage: local" in text
    assert "; database: sqlite; storage: local; engines: image,procedural,reference,upscale,video" in text
