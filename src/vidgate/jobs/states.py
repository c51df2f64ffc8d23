"""The job state machine, with every allowed transition in one place."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELED}),
    # PROCESSING -> QUEUED: an attempt failed (or its worker died) and another attempt is allowed.
    JobStatus.PROCESSING: frozenset(
        {JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_transition(old: JobStatus, new: JobStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[old]


def sources_of(new: JobStatus) -> tuple[str, ...]:
    """The statuses a job may move to `new` from (the store's every status change is guarded by these)."""
    return tuple(old.value for old, targets in ALLOWED_TRANSITIONS.items() if new in targets)


def wire_status(status: JobStatus) -> str:
    """Venice exposes only PROCESSING and COMPLETED; queued work reads as PROCESSING (SPEC §3)."""
    return "COMPLETED" if status is JobStatus.COMPLETED else "PROCESSING"


# A failed job's error column: "<public message>\x1f<operator detail>" when the client may see the first part.
PUBLIC_ERROR_SEPARATOR = "\x1f"


def job_error(detail: str, public_message: str | None = None) -> str:
    return f"{public_message}{PUBLIC_ERROR_SEPARATOR}{detail}" if public_message else detail


def public_error(error: str | None) -> str | None:
    """The message a failed job's retrieve shows, when the failure left one for the client."""
    if error and PUBLIC_ERROR_SEPARATOR in error:
        return error.split(PUBLIC_ERROR_SEPARATOR, 1)[0]
    return None
