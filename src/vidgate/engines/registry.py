"""Which engine renders which model, and whether this server can render a request at all."""

from __future__ import annotations

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import VideoRequest
from vidgate.engines.base import Engine
from vidgate.engines.diffusers_models import DiffusersBinding, request_issues
from vidgate.errors import InvalidRequest, invalid
from vidgate.gateway.config import UpstreamConfig

ENGINES = ("procedural", "image", "reference", "video", "upscale", "diffusers", "upstream")
# Engines every worker can run; the others serve only the models bound to them (diffusers).
CPU_ENGINES = ("procedural", "image", "reference", "video", "upscale")


def ensure_renderable(spec: ModelSpec, req: VideoRequest, bindings: dict[str, DiffusersBinding]) -> None:
    """A request this server cannot render is a clear 400 before any charge: a model whose record names an
    engine this server lacks, or one its bound pipeline cannot honour (engines/diffusers_models.py)."""
    if spec.engine not in ENGINES:
        raise invalid("model", f"model {spec.id} needs the {spec.engine!r} engine, which this server does not "
                               f"have (available: {', '.join(ENGINES)})", code="unsupported")
    if spec.engine == "diffusers":
        issues = request_issues(bindings[spec.id], req.resolution, req.duration_s)
        if issues:
            raise InvalidRequest(issues, message=f"{issues[0].label()}: {issues[0].message}")


def engine_for(name: str, *, preset: str, crf: int, upscale_method: str = "auto",
               bindings: dict[str, DiffusersBinding] | None = None, device: str | None = None,
               upstreams: dict[str, UpstreamConfig] | None = None) -> Engine:
    """The engine instance for a job; imports are lazy so a worker loads only what it uses. A worker keeps
    each engine it made (the diffusers engine keeps its pipelines loaded)."""
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
    if name == "diffusers":
        from vidgate.engines.diffusers_engine import DiffusersEngine

        return DiffusersEngine(bindings or {}, device=device, preset=preset, crf=crf)
    if name == "upstream":
        from vidgate.engines.upstream import UpstreamEngine

        return UpstreamEngine(upstreams or {})
    raise ValueError(f"no engine named {name!r}")
