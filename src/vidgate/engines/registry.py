"""Which engine renders which model, and whether this server can render a request at all."""

from __future__ import annotations

from vidgate.catalog.models import ModelSpec
from vidgate.engines.base import Engine
from vidgate.errors import invalid

ENGINES = ("procedural", "image", "reference", "video", "upscale")


def ensure_renderable(spec: ModelSpec) -> None:
    """A model whose catalogue entry names an engine this server lacks is a clear 400, before any charge."""
    if spec.engine not in ENGINES:
        raise invalid("model", f"model {spec.id} needs the {spec.engine!r} engine, which this server does not "
                               f"have (available: {', '.join(ENGINES)})", code="unsupported")


def engine_for(name: str, *, preset: str, crf: int, upscale_method: str = "auto") -> Engine:
    """The engine instance for a job; imports are lazy so a worker loads only what it uses."""
    if name == "procedural":
        from vidgate.engines.procedural import ProceduralEngine

        return ProceduralEngine(preset=preset, crf=crf)
    if name == "image":
        from vidgate.engines.image_to_video import ImageToVideoEngine

        return ImageToVideoEngine(preset=preset, crf=crf)
    if name == "reference":
        from vidgate.engines.reference import ReferenceEngine

        return ReferenceEngine(preset=preset, crf=crf)
    if name == "video":
        from vidgate.engines.video_to_video import VideoToVideoEngine

        return VideoToVideoEngine(preset=preset, crf=crf)
    if name == "upscale":
        from vidgate.engines.upscale import UpscaleEngine

        return UpscaleEngine(preset=preset, crf=crf, method=upscale_method)
    raise ValueError(f"no engine named {name!r}")
