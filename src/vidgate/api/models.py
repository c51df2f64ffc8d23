"""`GET /models`: the catalogue, in Venice's list shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from vidgate.api.auth import optional_key_owner
from vidgate.api.http import API_PREFIX, JSONResponse
from vidgate.api.video import ctx_of
from vidgate.catalog.validation import expected_list
from vidgate.errors import invalid

MODEL_TYPES = ("asr", "embedding", "image", "music", "text", "tts", "upscale", "inpaint", "video", "all", "code")


async def list_models(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    # Auth is optional here (OAS `security: [{}, BearerAuth]`). A valid key gets its balance headers, on this
    # response whatever it is; no key, or an invalid one, still gets the list (see optional_key_owner).
    await optional_key_owner(ctx, request)
    model_type = request.query_params.get("type")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise invalid("type", f"Invalid enum value. Expected {expected_list(MODEL_TYPES)}, received '{model_type}'",
                      code="invalid_enum_value", expected=expected_list(MODEL_TYPES), received=model_type)
    # This server only has video models: "video" and "all" (and no filter) list them, other types are empty.
    data = ctx.catalog.public_list() if model_type in (None, "video", "all") else []
    return JSONResponse({"object": "list", "type": model_type or "all", "data": data})


routes = [Route(f"{API_PREFIX}/models", list_models, methods=["GET"])]
