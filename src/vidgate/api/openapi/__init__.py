"""The OpenAPI 3.1 document served at `/openapi.json`: Venice's routes as Venice publishes them, plus vidgate's.

Two hand-maintained files, shipped in the package:

- `venice-openapi-video.yaml`: Venice's own OpenAPI file for the routes vidgate implements (/models, /video/*,
  /x402/*), byte for byte the contract the tests check responses against (tests/contract/ holds the same file;
  tests/ops/test_openapi.py fails when the two differ). It is OpenAPI 3.0: `to_openapi_31` converts what 3.1
  spells differently (`nullable`, boolean `exclusiveMinimum`), and its paths get the `/api/v1` prefix.
- `vidgate-extensions.yaml`: vidgate's own routes (jobs, events, webhooks, consents, download links, operations,
  playground), its schemas, and what vidgate adds to Venice's queue (the Idempotency-Key header, `webhook_url`,
  `seed`).

The document is written, not generated: the API's routes are plain Starlette routes (api/app.py) that parse their
own bodies, so no framework could describe them.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

from vidgate.api.http import API_PREFIX, API_VERSION
from vidgate.settings import Settings

VENICE_FILE = "venice-openapi-video.yaml"
EXTENSIONS_FILE = "vidgate-extensions.yaml"


# libyaml's parser when PyYAML has it (5x faster on Venice's 3,400 lines), else the pure-Python one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """YAML without the implicit timestamp type: an example written `2026-04-03 12:34:56+00:00` stays that
    string (JSON has no date type, and PyYAML would turn it into a datetime)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def load_packaged(name: str) -> dict[str, Any]:
    text = resources.files("vidgate.api.openapi").joinpath(name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_Loader)  # a SafeLoader (or CSafeLoader) subclass: no arbitrary objects


def to_openapi_31(node: Any) -> Any:
    """A copy of an OpenAPI 3.0 fragment in 3.1's spelling (3.1 schemas are JSON Schema 2020-12)."""
    if isinstance(node, list):
        return [to_openapi_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_openapi_31(value) for key, value in node.items()}
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True and limit in out:
            out[bound] = out.pop(limit)
        elif out.get(bound) is False:
            del out[bound]
    return out


def build_document(settings: Settings) -> dict[str, Any]:
    """The whole document for this server (its servers entry and description follow the operator's settings)."""
    venice = to_openapi_31(load_packaged(VENICE_FILE))
    ours = copy.deepcopy(load_packaged(EXTENSIONS_FILE))

    paths: dict[str, Any] = {f"{API_PREFIX}{path}": item for path, item in venice["paths"].items()}
    queue = paths[f"{API_PREFIX}/video/queue"]["post"]
    additions = ours["queue_additions"]
    queue.setdefault("parameters", []).extend(additions["parameters"])
    queue["responses"].update(additions["responses"])
    components = venice["components"]
    components["schemas"]["QueueVideoRequest"]["properties"].update(additions["body_properties"])
    for path, item in ours["paths"].items():
        if path in paths:
            raise ValueError(f"{EXTENSIONS_FILE}: {path} is already in {VENICE_FILE}")
        paths[path] = item
    for section, entries in ours["components"].items():
        for name, value in entries.items():
            if name in components.setdefault(section, {}):
                raise ValueError(f"{EXTENSIONS_FILE}: components.{section}.{name} is already in {VENICE_FILE}")
            components[section][name] = value

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vidgate",
            "version": API_VERSION,
            "description": _description(settings),
        },
        "servers": [{"url": (settings.public_base_url or "").rstrip("/") or "/",
                     "description": "this server"}],
        "tags": [*venice.get("tags", _venice_tags(paths)), *ours["tags"]],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def _venice_tags(paths: dict[str, Any]) -> list[dict[str, str]]:
    names = sorted({tag for item in paths.values() for op in item.values() if isinstance(op, dict)
                    for tag in op.get("tags", ())} - {"Jobs", "Webhooks", "Consents", "Delivery", "Operations",
                                                      "Playground"})
    return [{"name": name, "description": "Venice-compatible"} for name in names]


def _description(settings: Settings) -> str:
    keys = (f"Get an API key at {settings.account_url}." if settings.account_url
            else "API keys are issued by the operator of this server.")
    credit = f" Add credit at {settings.topup_url}." if settings.topup_url else ""
    return (
        "A self-hosted, Venice-compatible video generation API. The routes tagged Models, Video and x402 are "
        "Venice's, described by Venice's own OpenAPI file; the others, and the fields marked `vidgate extension`, "
        f"are this server's own. Authenticate with `Authorization: Bearer <key>`. {keys}{credit}"
    )
