"""`vidgate catalog sync --from URL` against a second vidgate on loopback, then the synced file loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.catalog.test_catalog import HOUSE_MODEL, write
from tests.conftest import LiveServer, api_for, free_port
from vidgate.catalog.models import load_catalog
from vidgate.settings import load_settings

SOURCE_CATALOG = {
    "models": [HOUSE_MODEL],
    "update": {"wan-2-7-text-to-video": {"durations": ["5s", "7s"]}},
    "remove": ["veo3-fast-text-to-video"],
}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[LiveServer]:
    env = dict(os.environ, VIDGATE_CATALOG_FILE=str(write(tmp_path, "source-catalog.json", SOURCE_CATALOG)),
               VIDGATE_RATE_LIMIT_QUEUE_PER_MIN="0", VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN="0", PYTHONUNBUFFERED="1")
    server = LiveServer(data_dir=tmp_path / "source", port=free_port(), env=env, workers=0)
    server.start()
    yield server
    server.stop()


def sync(source: LiveServer, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    return subprocess.run([sys.executable, "-m", "vidgate", "catalog", "sync", "--from",
                           f"{source.base_url}/api/v1", "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=120)


async def test_sync_writes_a_reviewable_file_that_loads_with_the_sources_models_and_prices(
        source: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "synced.json"
    done = sync(source, out)
    assert done.returncode == 0, done.stderr
    assert "1 new, 1 changed" in done.stdout and "1 local models the server does not list" in done.stdout
    synced = json.loads(out.read_text())
    assert [m["id"] for m in synced["models"]] == ["house-t2v"]
    assert synced["update"] == {"wan-2-7-text-to-video": {"durations": ["5s", "7s"]}}
    assert synced["models"][0]["pricing"]["kind"] == "fixed"

    catalog = load_catalog(out)  # the file is a valid operator catalogue as it stands
    assert catalog.get("house-t2v") is not None
    async with api_for(load_settings(data_dir=tmp_path / "local", catalog_file=out)) as local:
        for body in ({"model": "house-t2v", "duration": "3s", "resolution": "360p"},
                     {"model": "house-t2v", "duration": "6s", "resolution": "480p"},
                     {"model": "wan-2-7-text-to-video", "duration": "7s", "resolution": "720p"}):
            theirs = httpx.post(f"{source.base_url}/api/v1/video/quote", json=body, timeout=10)
            ours = await local.post("/video/quote", body)
            assert theirs.status_code == ours.status_code == 200, (theirs.text, ours.text)
            assert theirs.json() == ours.json()


def test_sync_from_a_server_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    dead = LiveServer(data_dir=tmp_path / "none", port=free_port(), env={})
    done = sync(dead, tmp_path / "out.json")
    assert done.returncode == 1
    assert dead.base_url in done.stderr
    assert not (tmp_path / "out.json").exists()
