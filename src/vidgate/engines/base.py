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


class TerminalFailure(Exception):
    """A failure no retry can fix (the upstream refused the job, its provider account is empty, ...).

    The job fails at once and is refunded; `public_message` is what retrieve tells the client (never hosts,
    keys or traces), the exception text what the operator's log and the job's error get."""

    def __init__(self, message: str, *, public_message: str = "Inference processing failed") -> None:
        super().__init__(message)
        self.public_message = public_message


class Engine(Protocol):
    """Renders `spec` into an MP4 at `out_path`, reporting progress as it goes."""

    name: str

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None: ...
