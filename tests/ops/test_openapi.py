"""`/openapi.json` describes every route of the app, is a valid OpenAPI 3.1 document, and says what the routes
really answer; `/docs` is Swagger UI served by vidgate itself, with nothing loaded from elsewhere."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route

from tests.conftest import Api, t2v_body

# Serving the documentation is not an API route to document.
UNDOCUMENTED = {"/docs", "/docs/assets/{name}"}
CONTRACT_COPY = Path(__file__).resolve().parents[1] / "contract" / "venice-openapi-video.yaml"


def template(path: str) -> str:
    """`/x/{queue_id}` and `/x/{wallet}` name the same route: parameter names do not matter for matching."""
    return re.sub(r"\{[^}]+\}", "{}", path)


async def document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def app_operations(api: Api) -> set[tuple[str, str]]:
    app = api.client._transport.app  # type: ignore[attr-defined]
    found = set()
    for route in app.routes:
        if isinstance(route, Route) and route.path not in UNDOCUMENTED:
            found |= {(template(route.path), method.lower()) for method in route.methods or () if method != "HEAD"}
    return found


async def test_every_route_of_the_app_is_in_the_document_with_its_method_and_nothing_else(api: Api) -> None:
    doc = await document(api)
    documented = {(template(path), method) for path, item in doc["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete", "patch")}
    routes = app_operations(api)
    assert len(routes) >= 28  # Venice's routes and the extensions, not an empty walk
    assert routes - documented == set(), "routes the document does not describe"
    assert documented - routes == set(), "operations the app does not have"
    for must in [("/api/v1/video/queue", "post"), ("/api/v1/video/jobs/{}/events", "get"), ("/readyz", "get"),
                 ("/metrics", "get"), ("/api/v1/webhooks", "put"), ("/playground", "get")]:
        assert must in routes and must in documented


async def test_the_document_is_valid_openapi_31(api: Api) -> None:
    doc = await document(api)
    assert doc["openapi"] == "3.1.0"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []


async def test_venice_routes_keep_venices_contract_and_get_vidgates_additions(api: Api) -> None:
    doc = await document(api)
    queue = doc["paths"]["/api/v1/video/queue"]["post"]
    assert queue["operationId"] == "queueVideo" and queue["tags"] == ["Video"]
    assert "Idempotency-Key" in [p["name"] for p in queue["parameters"]] and "422" in queue["responses"]
    body = doc["components"]["schemas"]["QueueVideoRequest"]["properties"]
    assert {"webhook_url", "seed", "prompt", "duration"} <= set(body)
    # Venice's file is OpenAPI 3.0: what 3.1 spells otherwise is converted everywhere.
    keywords = list(walk(doc))
    assert ("nullable", True) not in keywords
    bounds = [value for key, value in keywords if key in ("exclusiveMinimum", "exclusiveMaximum")]
    assert len(bounds) >= 3 and all(type(value) in (int, float) for value in bounds)


def walk(node: Any) -> Any:
    """Every (key, value) pair in a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_the_packaged_venice_file_is_the_contract_the_tests_check() -> None:
    packaged = resources.files("vidgate.api.openapi").joinpath("venice-openapi-video.yaml").read_bytes()
    assert packaged == CONTRACT_COPY.read_bytes(), "copy tests/contract/venice-openapi-video.yaml over it"


def resolve(doc: dict[str, Any], node: Any, seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `$ref` into the document's components replaced by what it names."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref:
            _, section, kind, name = ref.split("/")
            assert name not in seen, f"recursive {name}"
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return resolve(doc, {**doc[section][kind][name], **rest}, (*seen, name))
        return {k: resolve(doc, v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(doc, v, seen) for v in node]
    return node


def assert_documented(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """The response's status is documented for the operation and its JSON body matches that schema."""
    operation = doc["paths"][path][method]
    documented = resolve(doc, operation["responses"].get(str(response.status_code)))
    assert documented is not None, f"{method.upper()} {path} does not document {response.status_code}"
    schema = documented["content"]["application/json"]["schema"]
    errors = sorted(Draft202012Validator(schema).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {response.status_code}: {[e.message for e in errors[:5]]}"


async def test_the_extensions_answer_what_the_document_says(api: Api) -> None:
    doc = await document(api)
    key = await api.new_key()
    auth = {"Authorization": f"Bearer {key}"}
    queued = (await api.post("/video/queue", t2v_body(), key)).json()
    job_path = f"/api/v1/video/jobs/{queued['queue_id']}"
    assert_documented(doc, "/api/v1/video/jobs/{queue_id}", "get", await api.client.get(job_path, headers=auth))
    assert_documented(doc, "/api/v1/video/jobs", "get", await api.client.get("/api/v1/video/jobs", headers=auth))
    assert_documented(doc, "/api/v1/video/jobs/{queue_id}/cancel", "post",
                      await api.client.post(f"{job_path}/cancel", headers=auth))
    assert_documented(doc, "/api/v1/video/jobs/{queue_id}/cancel", "post",
                      await api.client.post(f"{job_path}/cancel", headers=auth))  # 409: already canceled
    assert_documented(doc, "/api/v1/video/jobs/{queue_id}", "get",
                      await api.client.get("/api/v1/video/jobs/nope", headers=auth))  # 404
    assert_documented(doc, "/api/v1/webhooks", "get", await api.client.get("/api/v1/webhooks", headers=auth))
    assert_documented(doc, "/api/v1/webhooks/deliveries", "get",
                      await api.client.get("/api/v1/webhooks/deliveries", headers=auth))
    assert_documented(doc, "/api/v1/consents", "get", await api.client.get("/api/v1/consents", headers=auth))
    assert_documented(doc, "/readyz", "get", await api.client.get("/readyz"))
    assert_documented(doc, "/healthz", "get", await api.client.get("/healthz"))
    assert_documented(doc, "/playground/inputs", "get", await api.client.get("/playground/inputs"))
    reused = await api.client.post("/api/v1/video/queue", json=t2v_body(prompt="other"),
                                   headers={**auth, "Idempotency-Key": "k1"})
    again = await api.client.post("/api/v1/video/queue", json=t2v_body(prompt="another"),
                                  headers={**auth, "Idempotency-Key": "k1"})
    assert reused.status_code == 200 and again.status_code == 422
    assert_documented(doc, "/api/v1/video/queue", "post", again)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


async def test_docs_page_uses_only_assets_served_here_and_they_load(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) >= 3
    for url in parser.urls:
        assert "//" not in url and not url.startswith("/"), f"{url} is not relative to this server"
        asset = await api.client.get(f"/{url}")
        assert asset.status_code == 200 and len(asset.content) > 100, url
    bundle = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content and bundle.headers["content-type"].startswith("text/javascript")
    init = (await api.client.get("/docs/assets/docs-init.js")).text
    assert 'url: "openapi.json"' in init and "validatorUrl: null" in init
    assert (await api.client.get("/docs/assets/..%2Fdocs.py")).status_code == 404
    assert (await api.client.get("/docs/assets/swagger-editor-bundle.js")).status_code == 404
