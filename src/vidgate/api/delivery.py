"""Signed download links for private models: GET streams the MP4 without auth, DELETE revokes the link."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.api.http import API_PREFIX, JSONResponse
from vidgate.api.video import ctx_of, delete_media, find_video, not_ready, video_response
from vidgate.errors import Forbidden, Gone
from vidgate.jobs.states import JobStatus
from vidgate.jobs.store import Job
from vidgate.storage.signing import ExpiredToken, InvalidToken

EXPIRED = "This download link has expired."
REVOKED = "This download link has been revoked or the video was removed."


async def linked_job(request: Request, token: str) -> Job:
    ctx = ctx_of(request)
    try:
        queue_id = ctx.signer.verify(token)
    except InvalidToken:
        raise Forbidden("Invalid download link signature.") from None
    except ExpiredToken:
        raise Gone(EXPIRED) from None
    job = await ctx.store.get(queue_id)
    if job is None:
        raise Gone(REVOKED)
    if job.download_revoked or job.media_deleted:
        raise Gone(REVOKED)
    return job


async def download(request: Request) -> Response:
    ctx = ctx_of(request)
    job = await linked_job(request, request.path_params["token"])
    if job.status is JobStatus.FAILED:
        raise Gone("The video generation failed; nothing to download.")
    if job.status is not JobStatus.COMPLETED:
        raise not_ready()
    found = await find_video(ctx.storage, job.media_key)
    if found is None:
        raise Gone(REVOKED)
    return video_response(ctx.storage, job.media_key or "", found, job.id)


async def revoke(request: Request) -> JSONResponse:
    """Revoke the link and, for privacy, delete the video it points to.

    The object goes first: with the bucket away that is a 503 (StorageUnavailable) with nothing changed, so the
    client's retry finds the link as it was. Revoking first would make the retry a 410 and leave the video in
    the bucket with nothing left to delete it."""
    ctx = ctx_of(request)
    job = await linked_job(request, request.path_params["token"])
    if job.media_key:
        await run_in_threadpool(ctx.storage.delete, job.media_key)
    await ctx.store.revoke_download(job.id)
    await delete_media(ctx, job)  # marks the media deleted (deleting the object again is harmless)
    return JSONResponse({"success": True})


routes = [
    Route(f"{API_PREFIX}/video/download/{{token}}", download, methods=["GET"]),
    Route(f"{API_PREFIX}/video/download/{{token}}", revoke, methods=["DELETE"]),
]
