"""The engine interface: what turns a validated job into an MP4 file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vidgate.media.types import Inputs

ProgressCallback = Callable[[float], None]
"""Called with the fraction of frames done (0.0 … 1.0)."""


@dataclass(frozen=True)
class RenderSpec:
    """Everything an engine needs to render one job, already validated and normalised."""

    model: str
    prompt: str
    duration_s: int
    width: int
    height: int
    fps: int = 24
    audio: bool = False
    negative_prompt: str = ""
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    # The user's media, fetched and probed at queue time, by request field group ("image_url",
    # "reference_video_urls", "audio_url", "keyframes", "elements.frontal_image_url", ...), in request order.
    inputs: Inputs = field(default_factory=dict)

    def input_paths(self, key: str) -> list[str]:
        return [item.path for item in self.inputs.get(key, ())]


class Engine(Protocol):
    """Renders `spec` into an MP4 at `out_path`, reporting progress as it goes."""

    name: str

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None: ...
