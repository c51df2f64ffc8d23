"""The normalised form of a video request, after validation against its model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Fields that carry user media (URLs or data: URLs), by the kind of media they hold.
MEDIA_URL_FIELDS: dict[str, str] = {
    "image_url": "image",
    "end_image_url": "image",
    "audio_url": "audio",
    "video_url": "video",
}
MEDIA_LIST_FIELDS: dict[str, str] = {
    "reference_image_urls": "image",
    "reference_video_urls": "video",
    "reference_audio_urls": "audio",
    "reference_document_urls": "document",
    "scene_image_urls": "image",
}


@dataclass
class VideoRequest:
    """A request that passed validation: every value is one the model accepts."""

    model: str
    prompt: str = ""
    negative_prompt: str = ""
    duration: str | None = None
    duration_s: int | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    audio: bool = False
    upscale_factor: int | None = None
    bitrate_mode: str = "standard"
    omni_reference_task_type: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, Any] | None = None
    # The fetched, probed media (RenderSpec.inputs layout) and the folder holding it, set at queue time.
    inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    inputs_dir: str | None = None
    # Pricing-only inputs (quote).
    input_height: float | None = None
    input_fps: float | None = None  # upscale pricing: measured from the input video
    reference_video_total_duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (shallow: every value already is plain JSON data)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoRequest:
        return cls(**data)
