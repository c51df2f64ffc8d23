"""The SDK's exceptions, one tree (as httpx does), so a caller can catch as broadly or narrowly as it needs.

    VidgateClientError
    ├── VidgateAPIError        the server answered 4xx/5xx: status, code, message, retry_after, body
    ├── JobFailed              wait(): the job ended FAILED; `.job.error` says why (and whether a retry may help)
    ├── JobCanceled            wait(): the job was canceled before it finished
    ├── WaitTimeout            wait(): the job was not final within the timeout (it keeps running on the server)
    └── MediaUnavailable       the job completed but its video is gone (completed/deleted) or not offered

Network failures are httpx's own exceptions (`httpx.TransportError`), left as they are: they carry the URL and
cause, and wrapping them would hide what callers already know how to handle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidgate.client.types import Job


class VidgateClientError(Exception):
    """Base of every error the SDK raises itself."""


class VidgateAPIError(VidgateClientError):
    """The server refused or failed a request; `body` is its JSON error document (or {} if it sent none)."""

    def __init__(self, status: int, code: str | None, message: str, retry_after: float | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}{f' {code}' if code else ''}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.body = body or {}


class JobEnded(VidgateClientError):
    """A job reached a final state other than completed; `job` is its last known state."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__(message)
        self.job = job


class JobFailed(JobEnded):
    def __init__(self, job: Job) -> None:
        error = job.error
        detail = f"{error.code}: {error.message}" if error else "no reason given"
        super().__init__(job, f"job {job.queue_id} failed ({detail})")


class JobCanceled(JobEnded):
    def __init__(self, job: Job) -> None:
        super().__init__(job, f"job {job.queue_id} was canceled")


class WaitTimeout(VidgateClientError):
    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.queue_id} is still {job.status} after {timeout:g} s")
        self.job = job


class MediaUnavailable(VidgateClientError):
    def __init__(self, queue_id: str, why: str) -> None:
        super().__init__(f"job {queue_id}: {why}")
        self.queue_id = queue_id
