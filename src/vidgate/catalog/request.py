"""The typed values a request becomes on its way through the server, each made once and never changed.

    body --validate--> VideoRequest --prepare media--> PreparedInputs (+ MediaFacts) --> Quote
                                    \\__________________________________________________/
                                                          JobPayload (stored with the job, read by the worker)

`VideoRequest` holds the user's media as they sent them (URLs, `data:` URLs), because preparation fetches
them; `JobPayload` holds the prepared files instead, so a stored job never carries megabytes of base64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vidgate.media.types import Inputs, PreparedInput

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


@dataclass(frozen=True)
class CameraKeyframe:
    """One point of a `camera_trajectory` (MiniMax H3 Max Multi-Angle): degrees, and distance relative to 1."""

    time: float
    azimuth: float
    elevation: float
    distance: float


@dataclass(frozen=True)
class RenderChoices:
    """What a request asks the engine for: the part that the validated request and the stored job share."""

    model: str  # the catalogue id (an alias is resolved)
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
    camera_trajectory: tuple[CameraKeyframe, ...] | None = None
    seed: int | None = None  # vidgate extension: the same seed and request give the same video


@dataclass(frozen=True)
class VideoRequest(RenderChoices):
    """A request that passed validation: every value is one the model accepts. Never modified."""

    model_echo: str = ""  # the id the client sent (a dotted alias stays as sent in the answer)
    # The media fields as sent (read-only by convention: nothing writes into them after validation).
    media: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, Any] | None = None
    # Pricing-only inputs (quote).
    input_height: float | None = None
    reference_video_total_duration: float | None = None
    reference_image_count: int | None = None


@dataclass(frozen=True)
class MediaFacts:
    """What pricing and later checks need from the prepared media (measured, never taken from the body)."""

    source_seconds: float | None = None  # video_url's length (upscale / video-to-video pricing)
    source_height: float | None = None
    source_fps: float | None = None
    reference_video_seconds: float | None = None  # all reference_video_urls together
    reference_image_count: int = 0


@dataclass(frozen=True)
class UpstreamJob:
    """A gateway job's twin on its upstream, recorded with the job in the transaction that charges it."""

    upstream: str  # the name in VIDGATE_UPSTREAMS
    queue_id: str
    model: str  # the id the upstream knows it by
    download_url: str | None = None  # the upstream's signed link (private models)
    deadline_at: float = 0.0  # epoch seconds: not done by then, the job fails and is refunded


@dataclass(frozen=True)
class JobPayload(RenderChoices):
    """What a job stores and its worker reads: the request without its raw media, and the prepared files."""

    # The fetched, probed media (RenderSpec.inputs) and the folder holding them.
    inputs: Inputs = field(default_factory=dict)
    inputs_dir: str | None = None
    # Decided from the model's record at queue time, so a job renders as it was accepted.
    workflows: bool = False
    upstream: UpstreamJob | None = None

    def with_upstream(self, job: UpstreamJob) -> JobPayload:
        return replace(self, upstream=job)

    @classmethod
    def of(cls, req: VideoRequest, inputs: Inputs, inputs_dir: str | None, *,
           workflows: bool) -> JobPayload:
        shared = {f.name: getattr(req, f.name) for f in fields(RenderChoices)}
        return cls(**shared, inputs=inputs, inputs_dir=inputs_dir,
                   workflows=workflows)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": {key: [item.to_json() for item in items]
                                           for key, items in self.inputs.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPayload:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["inputs"] = {key: tuple(PreparedInput.from_json(item) for item in items)
                            for key, items in values.get("inputs", {}).items()}
        if isinstance(values.get("upstream"), dict):
            values["upstream"] = UpstreamJob(**values["upstream"])
        payload = cls(**values)
        if payload.camera_trajectory is not None:
            points = tuple(CameraKeyframe(**p) if isinstance(p, dict) else p for p in payload.camera_trajectory)
            payload = replace(payload, camera_trajectory=points)
        return payload
