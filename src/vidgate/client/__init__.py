"""A Python client for vidgate (and, for the Venice routes, any Venice-compatible server).

    from vidgate.client import VidgateClient

    with VidgateClient("http://127.0.0.1:8000", api_key="vg_...") as client:
        print(client.quote(model="wan-2.5-preview-text-to-video", duration="5s", resolution="720p"))
        job = client.generate(model="wan-2.5-preview-text-to-video", prompt="A red fox in snow",
                              duration="5s", resolution="720p", to="fox.mp4",
                              on_update=lambda job: print(job.status, job.progress))

`AsyncVidgateClient` is the same for asyncio. Requests that are safe to repeat are retried on 429/503,
honouring Retry-After; a queue is retried only when it carries an Idempotency-Key (`generate` always sends
one), so no retry ever charges twice. Errors are in `vidgate.client.errors`.
"""

from vidgate.client.aio import AsyncVidgateClient
from vidgate.client.errors import (
    JobCanceled,
    JobEnded,
    JobFailed,
    MediaUnavailable,
    VidgateAPIError,
    VidgateClientError,
    WaitTimeout,
)
from vidgate.client.sync import VidgateClient
from vidgate.client.types import Job, JobError, JobEvent, JobPage, Model, Queued, RetrieveStatus

__all__ = [
    "AsyncVidgateClient",
    "Job",
    "JobCanceled",
    "JobEnded",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobPage",
    "MediaUnavailable",
    "Model",
    "Queued",
    "RetrieveStatus",
    "VidgateAPIError",
    "VidgateClient",
    "VidgateClientError",
    "WaitTimeout",
]
