"""What the SDK returns: frozen dataclasses built from the server's JSON, tolerant of fields added later.

Each `from_json` reads only the fields it knows, so a newer server adding fields does not break an older SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JobStatus = Literal["queued", "running", "completed", "failed", "canceled"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled"})


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class Model:
    """One entry of `GET /models?type=video`; `raw` keeps the whole Venice-shaped entry."""

    id: str
    name: str
    model_type: str
    durations: tuple[str, ...]
    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        spec = data.get("model_spec") or {}
        constraints = spec.get("constraints") or {}
        return cls(
            id=str(data.get("id", "")),
            name=str(spec.get("name") or data.get("id", "")),
            model_type=str(constraints.get("model_type", "")),
            durations=tuple(constraints.get("durations") or ()),
            resolutions=tuple(constraints.get("resolutions") or ()),
            aspect_ratios=tuple(constraints.get("aspect_ratios") or ()),
            raw=data,
        )


@dataclass(frozen=True)
class Queued:
    """The answer to `POST /video/queue`. `download_url` only for private models: a signed link needing no key."""

    queue_id: str
    model: str
    download_url: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Queued:
        return cls(queue_id=str(data["queue_id"]), model=str(data["model"]), download_url=data.get("download_url"))


@dataclass(frozen=True)
class RetrieveStatus:
    """`POST /video/retrieve` while the video is not (or, for private models, not here) to be had as bytes.

    `status` is Venice's: PROCESSING, or COMPLETED for private models (download from `download_url`)."""

    status: str
    average_execution_time_ms: int | None
    execution_duration_ms: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetrieveStatus:
        average, elapsed = data.get("average_execution_time"), data.get("execution_duration")
        return cls(status=str(data.get("status", "")),
                   average_execution_time_ms=int(average) if isinstance(average, int | float) else None,
                   execution_duration_ms=int(elapsed) if isinstance(elapsed, int | float) else None)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    retryable: bool

    @classmethod
    def from_json(cls, data: Any) -> JobError | None:
        if not isinstance(data, dict):
            return None
        return cls(code=str(data.get("code", "")), message=str(data.get("message", "")),
                   retryable=bool(data.get("retryable", False)))


@dataclass(frozen=True)
class Job:
    """vidgate's job record (`GET /video/jobs/{queue_id}`, the list, cancel and the event stream)."""

    queue_id: str
    model: str
    status: JobStatus
    cancel_requested: bool = False
    queue_position: int | None = None  # 1 = next to start
    progress: float = 0.0  # percent, 0..100
    eta_seconds: float | None = None
    price_usd: float = 0.0
    refunded_usd: float = 0.0
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: JobError | None = None
    media_available: bool = False
    download_url: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        position = data.get("queue_position")
        return cls(
            queue_id=str(data["queue_id"]),
            model=str(data.get("model", "")),
            status=str(data.get("status", "")).lower(),  # type: ignore[arg-type]
            cancel_requested=bool(data.get("cancel_requested", False)),
            queue_position=int(position) if isinstance(position, int) else None,
            progress=float(data.get("progress") or 0.0),
            eta_seconds=_float_or_none(data.get("eta_seconds")),
            price_usd=float(data.get("price_usd") or 0.0),
            refunded_usd=float(data.get("refunded_usd") or 0.0),
            attempts=int(data.get("attempts") or 0),
            created_at=_time(data.get("created_at")),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            error=JobError.from_json(data.get("error")),
            media_available=bool(data.get("media_available", False)),
            download_url=data.get("download_url"),
        )


@dataclass(frozen=True)
class JobPage:
    """One page of `GET /video/jobs`, newest first; pass `next_cursor` back to get the next page."""

    data: tuple[Job, ...]
    has_more: bool
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPage:
        return cls(data=tuple(Job.from_json(j) for j in data.get("data") or ()),
                   has_more=bool(data.get("has_more", False)), next_cursor=data.get("next_cursor"))


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event: `event` is queued/running/progress/completed/failed/canceled; `id` resumes."""

    id: int | None
    event: str
    job: Job  # the job's state when the server sent the event (it may already be past what `event` names)

    @property
    def is_final(self) -> bool:
        """The job's last event: completed, failed or canceled."""
        return self.event in FINAL_STATUSES
