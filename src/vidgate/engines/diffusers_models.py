"""Bindings of catalogue models to local diffusers pipelines, and what a binding allows (no torch import here).

`VIDGATE_DIFFUSERS_MODELS` is a JSON object from model id to a binding:

    {"wan-2.5-preview-text-to-video": {"path": "/models/Wan2.1-T2V-1.3B-Diffusers", "pipeline": "WanPipeline",
                                       "dtype": "bfloat16", "device": "cuda", "steps": 30, "guidance_scale": 5.0,
                                       "shift": 3.0, "cpu_offload": false, "vae_tiling": false}}

The binding's model becomes a `diffusers` engine model. Its request is mapped to the pipeline here, at queue
time too, so a request the binding cannot honour (a resolution it was not configured for, more frames than
its limit) is a 400 before any charge, not a failed job after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vidgate.catalog.models import Catalog
from vidgate.catalog.validation import expected_list
from vidgate.errors import Issue

WEIGHT_FILES = ("*.safetensors", "*.bin")
PipelineName = Literal["WanPipeline", "WanImageToVideoPipeline", "LTXPipeline", "LTXImageToVideoPipeline"]


@dataclass(frozen=True)
class Family:
    """What a pipeline family needs of a request: its native rate, frame-count rule and size multiple."""

    native_fps: int
    frame_step: int  # frame counts are frame_step * k + 1
    size_multiple: int
    max_frames: int
    takes_image: bool
    takes_last_image: bool


FAMILIES: dict[str, Family] = {
    # Wan 2.1 / 2.2: 16 fps, 4k+1 frames, sizes in multiples of 16 (32 for the 2.2 TI2V 5B VAE: set
    # size_multiple), 81 frames (5 s) is what the models are trained for.
    "WanPipeline": Family(16, 4, 16, 81, takes_image=False, takes_last_image=False),
    "WanImageToVideoPipeline": Family(16, 4, 16, 81, takes_image=True, takes_last_image=True),
    # LTX-Video: 24 fps (its frame_rate conditioning defaults to 25; its examples export 24), 8k+1 frames,
    # sizes in multiples of 32; 257 frames is its documented maximum.
    "LTXPipeline": Family(24, 8, 32, 257, takes_image=False, takes_last_image=False),
    "LTXImageToVideoPipeline": Family(24, 8, 32, 257, takes_image=True, takes_last_image=False),
}


class DiffusersBinding(BaseModel):
    """One model served from a local diffusers directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    pipeline: PipelineName
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    device: str = Field(default="cuda", pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    steps: int = Field(default=30, ge=1, le=500)
    guidance_scale: float = Field(default=5.0, ge=0)
    shift: float | None = Field(default=None, gt=0, description="flow shift of the scheduler (Wan: 3.0 at 480p)")
    cpu_offload: bool = False
    vae_tiling: bool = False
    resolutions: tuple[str, ...] | None = None  # the resolutions it is configured for; None: the catalogue's
    max_frames: int | None = Field(default=None, ge=1)
    size_multiple: int | None = Field(default=None, ge=8)
    native_fps: int | None = Field(default=None, ge=1)

    @property
    def family(self) -> Family:
        return FAMILIES[self.pipeline]

    @property
    def fps(self) -> int:
        return self.native_fps or self.family.native_fps

    @property
    def multiple(self) -> int:
        return self.size_multiple or self.family.size_multiple

    @property
    def frame_limit(self) -> int:
        return self.max_frames or self.family.max_frames


class BindingError(ValueError):
    """A binding that cannot be served; the message names the model and the path."""


def check_directory(model_id: str, binding: DiffusersBinding) -> None:
    """A directory that cannot hold the pipeline is a startup error, not a failed job later."""
    path = binding.path
    index = path / "model_index.json"
    if not path.is_dir():
        raise BindingError(f"diffusers model {model_id!r}: weights directory {path} does not exist")
    if not index.is_file():
        raise BindingError(f"diffusers model {model_id!r}: {path} has no model_index.json (not a diffusers "
                           "pipeline directory saved with save_pretrained)")
    try:
        components = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BindingError(f"diffusers model {model_id!r}: {index} cannot be read: {exc}") from None
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        folder = path / name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise BindingError(f"diffusers model {model_id!r}: {path} lacks the {name}/ folder its "
                               "model_index.json names (or it is empty)")
        # A model component (it has a config.json) needs its weights; a truncated copy fails here, not in a job.
        if (folder / "config.json").is_file() and not any(f for pattern in WEIGHT_FILES for f in folder.glob(pattern)):
            raise BindingError(f"diffusers model {model_id!r}: {folder} has a config.json but no weights "
                               "(*.safetensors or *.bin)")


def frame_count(binding: DiffusersBinding, seconds: int) -> int:
    """Frames the pipeline makes for `seconds` at its native rate, on its frame-count rule (k * step + 1)."""
    step = binding.family.frame_step
    return max(1, math.ceil((seconds * binding.fps - 1) / step)) * step + 1


def pipeline_size(binding: DiffusersBinding, width: int, height: int) -> tuple[int, int]:
    """The planned frame size rounded to the pipeline's multiple (never below one multiple)."""
    m = binding.multiple
    return max(m, round(width / m) * m), max(m, round(height / m) * m)


def request_issues(binding: DiffusersBinding, resolution: str | None, seconds: int | None) -> list[Issue]:
    """What a request asks that this binding cannot do (queue-time 400s naming the field and the limit)."""
    issues: list[Issue] = []
    allowed = binding.resolutions
    if allowed is not None and resolution not in allowed:
        expected = expected_list(allowed)
        issues.append(Issue(path=["resolution"], code="invalid_enum_value", expected=expected, received=resolution,
                            message=f"this server runs the model at {', '.join(allowed)} only; "
                                    f"Expected {expected}, received '{resolution}'"))
    if seconds is not None:
        frames = frame_count(binding, seconds)
        if frames > binding.frame_limit:
            longest = (binding.frame_limit - 1) // binding.fps
            issues.append(Issue(path=["duration"], code="too_big", received=f"{seconds}s",
                                extra={"maximum": binding.frame_limit},
                                message=f"{seconds}s is {frames} frames at {binding.fps} fps; this server runs "
                                        f"the model for at most {binding.frame_limit} frames ({longest}s)"))
    return issues


def bind_catalog(catalog: Catalog, bindings: dict[str, DiffusersBinding]) -> Catalog:
    """The catalogue with each bound model rendered by the `diffusers` engine; a binding for a model the
    catalogue lacks, a broken weights directory, or a `diffusers` model without a binding is a startup error."""
    for model_id, binding in bindings.items():
        if catalog.get(model_id) is None:
            raise BindingError(f"VIDGATE_DIFFUSERS_MODELS binds {model_id!r}, which is not in the catalogue "
                               "(define it in VIDGATE_CATALOG_FILE first)")
        check_directory(model_id, binding)
    unbound = [spec.id for spec in catalog if spec.engine == "diffusers" and spec.id not in bindings]
    if unbound:
        raise BindingError(f"models {unbound} use the diffusers engine but VIDGATE_DIFFUSERS_MODELS binds no "
                           "weights to them")
    return catalog.with_engine(set(bindings), "diffusers")
