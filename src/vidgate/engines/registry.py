"""Which engine renders which model, and whether this server can render a request at all."""

from __future__ import annotations

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import VideoRequest
from vidgate.engines.base import Engine
from vidgate.errors import invalid

# Inputs whose fetching and rendering are not built yet: a clear 400 at queue time, before any charge.
_NOT_YET = {
    "image-to-video": "image inputs (image_url, reference images, keyframes)",
    "video": "video inputs (video_url)",
}


def ensure_renderable(spec: ModelSpec, req: VideoRequest) -> None:
    """Raise a 400 naming what is missing when no engine here can render this request yet."""
    if spec.engine != "procedural" or not spec.is_text_to_video:
        what = _NOT_YET.get(spec.model_type, f"the {spec.engine} engine")
        field = next(iter(req.media), "model")
        raise invalid(field, f"model {spec.id} needs {what}, which this server does not support yet; "
                             "text-to-video models work today", code="unsupported")


def engine_for(name: str, *, preset: str, crf: int) -> Engine:
    if name == "procedural":
        from vidgate.engines.procedural import ProceduralEngine

        return ProceduralEngine(preset=preset, crf=crf)
    raise ValueError(f"no engine named {name!r}")
