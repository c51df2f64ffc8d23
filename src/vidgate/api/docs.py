"""`/openapi.json` and `/docs`, served by vidgate itself so that they work on a machine without internet.

    GET /openapi.json          the OpenAPI 3.1 document (api/openapi/), built once per app on first request
    GET /docs                  Swagger UI
    GET /docs/assets/{name}    its files: Swagger UI's own from the `swagger-ui-py` package (a pinned dependency
                               that ships Swagger UI's release files), and vidgate's `docs-init.js`

Swagger UI's usual setup loads it from a CDN; here it comes from the package. The page's
Content-Security-Policy allows nothing from elsewhere, so a browser would refuse, rather than fetch, anything a
future Swagger UI tried to load from the internet.
"""

from __future__ import annotations

import asyncio
import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from vidgate.api.openapi import build_document
from vidgate.errors import NotFound
from vidgate.settings import Settings

# Swagger UI's files the page uses, and where each comes from.
SWAGGER_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
                  "favicon-32x32.png": "image/png", "favicon-16x16.png": "image/png"}
OWN_ASSETS = {"docs-init.js": "text/javascript"}
ASSET_CACHE = "public, max-age=86400"

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vidgate API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" sizes="32x32" href="docs/assets/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="docs/assets/favicon-16x16.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/docs-init.js"></script>
</body>
</html>
"""


@cache
def swagger_static_dir() -> Path:
    """Swagger UI's files in the installed `swagger-ui-py` package, found without importing it (its module
    imports jinja2 and its web-framework glue, none of which is used here)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency of vidgate: pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def page_headers(settings: Settings) -> dict[str, str]:
    # 'unsafe-inline' styles: Swagger UI's React components set style attributes. "Try it out" calls this server,
    # or VIDGATE_PUBLIC_BASE_URL's origin when that is where the document's `servers` entry points.
    connect = "'self'"
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        connect += f" {parts.scheme}://{parts.netloc}"
    return {
        "Content-Security-Policy": f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   f"img-src 'self' data:; connect-src {connect}; frame-ancestors 'none'; "
                                   "base-uri 'none'; form-action 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


async def openapi_json(request: Request) -> Response:
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_json", None)
    if body is None:
        # The first request builds it (YAML parsing: ~0.1 s, in a thread so other requests go on meanwhile).
        document = await asyncio.to_thread(build_document, request.app.state.ctx.settings)
        body = state.openapi_json = orjson.dumps(document)
    return Response(body, media_type="application/json")


async def docs_page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=page_headers(request.app.state.ctx.settings))


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name in SWAGGER_ASSETS:
        path, media_type = swagger_static_dir() / name, SWAGGER_ASSETS[name]
    elif name in OWN_ASSETS:
        path = Path(str(resources.files("vidgate.api").joinpath("static", name)))
        media_type = OWN_ASSETS[name]
    else:  # only the files named above: never a path into the package directories
        raise NotFound("Not found")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": ASSET_CACHE,
                                                              "X-Content-Type-Options": "nosniff"})


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/assets/{name}", docs_asset, methods=["GET"]),
]
