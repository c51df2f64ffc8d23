"""`GET /readyz`: 200 while the database, the storage, the rate-limit storage and the engines can serve; 503
naming the check that cannot."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Api, api_for
from tests.postgres import PostgresCluster
from vidgate.settings import load_settings


async def test_ready_says_which_engines_and_upscaler(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True and body["failing"] == []
    assert body["checks"] == {"database": "ok", "storage": "ok", "rate_limits": "ok", "engines": "ok"}
    assert body["engines"] == ["image", "procedural", "reference", "upscale", "video"]
    assert body["upscaler"] in ("realesrgan", "lanczos")
    assert response.headers["cache-control"] == "no-store"


async def test_lanczos_by_setting_and_engines_of_this_node(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", upscale_method="lanczos", worker_engines=["upscale"])
    async with api_for(settings) as api:
        body = (await api.client.get("/readyz")).json()
        assert body["engines"] == ["upscale"] and body["upscaler"] == "lanczos"
    settings = load_settings(data_dir=tmp_path / "data", worker_engines=["procedural"])
    async with api_for(settings) as api:
        body = (await api.client.get("/readyz")).json()
        assert body["engines"] == ["procedural"] and body["upscaler"] is None


async def test_missing_storage_is_503_naming_it_and_ready_again_when_back(api: Api) -> None:
    media = api.settings.media_dir
    shutil.rmtree(media)
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False and body["failing"] == ["storage"]
    assert body["checks"]["storage"].startswith("failed: ") and body["checks"]["database"] == "ok"
    (media / ".scratch").mkdir(parents=True)
    assert (await api.client.get("/readyz")).status_code == 200


async def test_diffusers_weights_gone_is_503_naming_the_engines(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model_index.json").write_text('{"_class_name": "WanPipeline"}')  # enough for the start-up check
    bindings = {"wan-2.5-preview-text-to-video": {"path": str(weights), "pipeline": "WanPipeline"}}
    settings = load_settings(data_dir=tmp_path / "data", diffusers_models=bindings)
    async with api_for(settings) as api:
        assert (await api.client.get("/readyz")).status_code == 200
        shutil.rmtree(weights)  # an unmounted volume, say
        response = await api.client.get("/readyz")
        assert response.status_code == 503 and response.json()["failing"] == ["engines"]
        assert str(weights) in response.json()["checks"]["engines"]
        assert "diffusers" in response.json()["engines"]


async def test_database_down_is_503_naming_it(own_postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", database_url=own_postgres_cluster.new_database())
    async with api_for(settings) as api:
        assert (await api.client.get("/readyz")).status_code == 200
        own_postgres_cluster.stop("immediate")
        response = await api.client.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["failing"] == ["database"] and body["checks"]["storage"] == "ok"
        assert "127.0.0.1" not in response.text, "no connection details to an unauthenticated caller"
        own_postgres_cluster.start()
        assert (await api.client.get("/readyz")).status_code == 200
