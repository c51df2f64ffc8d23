"""The playground: a browser page for trying the API by hand (vidgate extension).

    GET /playground          one self-contained HTML page (inline CSS and JS; it loads nothing from elsewhere,
                             so it works on a machine without internet)
    GET /playground/inputs   which media inputs each model needs, so the page lists only the models it can feed

The page itself only talks to the public API (`/models`, `/video/quote`, `/video/queue`, the job's SSE events,
`/video/retrieve`, cancel). `/playground/inputs` exists because Venice's `/models` listing does not say which
inputs a model requires (an image, reference images, a source video); those facts live in the catalogue records.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.api.http import JSONResponse
from vidgate.api.video import ctx_of
from vidgate.catalog.models import ModelSpec

# The page keeps the API key in localStorage: it must not be framed by another site (clickjacking), and it has
# no business loading plugins or rebasing its relative URLs.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def page_bytes() -> bytes:
    # Read once from the installed package (package-data in pyproject.toml), so a wheel install serves it too.
    return resources.files("vidgate.api").joinpath("static", "playground.html").read_bytes()


async def playground(request: Request) -> Response:
    return Response(page_bytes(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def input_needs(spec: ModelSpec) -> dict[str, Any]:
    """What a request to this model must carry beyond its options, in the page's terms."""
    inputs = spec.inputs
    return {
        "prompt": spec.prompt,  # required | optional | none
        "image": inputs.image_url,  # no | optional | required: the page sends a picked file as a data: URL
        # Reference images/clips or a source video: the page has no fields for them, so it leaves these out.
        "other_media_required": inputs.references_required or inputs.video_url is not None,
        "default_resolution": spec.default_resolution,
        "default_aspect_ratio": spec.default_aspect_ratio,
    }


async def playground_inputs(request: Request) -> JSONResponse:
    catalog = ctx_of(request).catalog
    return JSONResponse({"models": {spec.id: input_needs(spec) for spec in catalog}})


routes = [
    Route("/playground", playground, methods=["GET"]),
    Route("/playground/inputs", playground_inputs, methods=["GET"]),
]
