"""Every JSON response validates against its schema in Venice's own OpenAPI file (shared/venice-openapi-video.yaml)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from tests.conftest import Api, t2v_body

# The project's shared/ folder beside the checkout when there is one, else the copy kept with the tests.
OPENAPI_FILE = Path(__file__).resolve().parents[2] / "shared" / "venice-openapi-video.yaml"
if not OPENAPI_FILE.exists():
    OPENAPI_FILE = Path(__file__).resolve().parent / "contract" / "venice-openapi-video.yaml"


@cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_FILE.read_text())


def deref(node: Any, seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref:
            name = ref.split("/")[-1]
            assert name not in seen, f"recursive schema {name}"
            return deref(spec()["components"]["schemas"][name], (*seen, name))
        return {k: deref(v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [deref(v, seen) for v in node]
    return node


def assert_matches_schema(path: str, method: str, response: httpx.Response) -> None:
    """Validate a response's JSON body against the OpenAPI schema for its route and status code."""
    operation = spec()["paths"][path][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method.upper()} {path} does not document status {response.status_code}"
    content_type = response.headers["content-type"].split(";")[0]
    schema = documented["content"][content_type]["schema"]
    if content_type != "application/json":
        return
    errors = sorted(OAS30Validator(deref(schema)).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {response.status_code}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
    )


async def test_models_list_matches_schema(api: Api) -> None:
    response = await api.client.get("/api/v1/models", params={"type": "video"})
    assert_matches_schema("/models", "get", response)


async def test_quote_responses_match_schema(api: Api) -> None:
    ok = await api.post("/video/quote", {"model": "wan-2-7-text-to-video", "duration": "5s", "resolution": "720p"})
    assert_matches_schema("/video/quote", "post", ok)
    bad = await api.post("/video/quote", {"model": "wan-2-7-text-to-video", "duration": "7s"})
    assert bad.status_code == 400
    assert_matches_schema("/video/quote", "post", bad)


async def test_queue_responses_match_schema(api: Api) -> None:
    key = await api.new_key()
    assert_matches_schema("/video/queue", "post", await api.post("/video/queue", t2v_body(), key))
    assert_matches_schema("/video/queue", "post", await api.post(
        "/video/queue", t2v_body(model="grok-imagine-text-to-video-private", duration="2s",
                                 resolution="480p"), key))
    assert_matches_schema("/video/queue", "post", await api.post("/video/queue", t2v_body(duration="9s"), key))
    assert_matches_schema("/video/queue", "post", await api.post("/video/queue", t2v_body(), "vg_bad_key"))
    assert_matches_schema("/video/queue", "post", await api.post("/video/queue", t2v_body()))
    poor = await api.new_key(balance_usd=0)
    assert_matches_schema("/video/queue", "post", await api.post("/video/queue", t2v_body(), poor))
    huge = await api.client.post("/api/v1/video/queue", content=b"x" * (36 * 1024 * 1024),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert_matches_schema("/video/queue", "post", huge)


async def test_retrieve_and_complete_responses_match_schema(api: Api) -> None:
    key = await api.new_key()
    queued = (await api.post("/video/queue", t2v_body(), key)).json()
    ident = {"model": queued["model"], "queue_id": queued["queue_id"]}
    assert_matches_schema("/video/retrieve", "post", await api.post("/video/retrieve", ident, key))
    await api.run_worker()
    done = await api.post("/video/retrieve", ident, key)
    assert done.headers["content-type"] == "video/mp4"
    assert_matches_schema("/video/retrieve", "post", done)
    assert_matches_schema("/video/complete", "post", await api.post("/video/complete", ident, key))
    assert_matches_schema("/video/retrieve", "post", await api.post("/video/retrieve", ident, key))
    assert_matches_schema("/video/retrieve", "post", await api.post("/video/retrieve", {"model": "x"}, key))
    assert_matches_schema("/video/complete", "post", await api.post("/video/complete", {"queue_id": "x"}, key))


async def test_private_model_retrieve_completed_json_matches_schema(api: Api) -> None:
    key = await api.new_key()
    body = t2v_body(model="grok-imagine-text-to-video-private", duration="1s", resolution="480p")
    queued = (await api.post("/video/queue", body, key)).json()
    await api.run_worker()
    done = await api.post("/video/retrieve", {"model": queued["model"], "queue_id": queued["queue_id"]}, key)
    assert done.json()["status"] == "COMPLETED"
    assert_matches_schema("/video/retrieve", "post", done)


@pytest.mark.parametrize("model_type", ["video", "all", "text"])
async def test_every_model_constraint_list_holds_non_empty_strings(api: Api, model_type: str) -> None:
    data = (await api.client.get("/api/v1/models", params={"type": model_type})).json()["data"]
    for model in data:
        constraints = model["model_spec"]["constraints"]
        for name in ("durations", "resolutions", "aspect_ratios"):
            assert all(isinstance(v, str) and v for v in constraints[name]), (model["id"], name)
