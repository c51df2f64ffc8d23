"""Queue-time media preparation: fetch every URL a request carries, probe it, enforce the SPEC's limits.

All of it happens before the charge, so a bad input costs nothing. The fetched files stay in a per-request
folder under the data dir; the job points at them, and the worker deletes the folder when the job is done.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import MEDIA_LIST_FIELDS, MEDIA_URL_FIELDS, VideoRequest
from vidgate.errors import InvalidRequest, Issue
from vidgate.media.fetch import GuardedFetcher, field_path
from vidgate.media.limits import check_media_limits
from vidgate.media.probe import MediaProbeError, probe_audio, probe_image, probe_video
from vidgate.media.types import Info, Inputs, MediaFile, PreparedInput

MB = 1024 * 1024
# Per-file download caps by kind. The SPEC's tighter per-model limits (50 MB Seedance clips, 15 MB audio) are
# checked afterwards with the measured values; these only stop runaway downloads.
DEFAULT_MAX_BYTES = {"image": 30 * MB, "video": 500 * MB, "audio": 15 * MB, "document": 100 * MB}
MAX_CONCURRENT_FETCHES = 4

Probed = Info


@dataclass(frozen=True)
class MediaItem:
    """One URL to fetch: where it sits in the request, and what it must turn out to be."""

    key: str  # the group: "reference_video_urls", "keyframes", "elements.frontal_image_url", ...
    label: str  # exact place: "reference_video_urls[1]", "keyframes[0].image_url"
    url: str
    kind: str
    frame_index: int | None = None  # keyframes
    element: int | None = None  # Kling O3 elements: the element's index


def media_items(req: VideoRequest) -> list[MediaItem]:
    """Every media URL in a validated request, in request order."""
    items: list[MediaItem] = []
    for name, kind in MEDIA_URL_FIELDS.items():
        if name in req.media:
            items.append(MediaItem(name, name, req.media[name], kind))
    for name, kind in MEDIA_LIST_FIELDS.items():
        if kind == "document":
            # Not fetched: a document entry may be any web page (Wan 3.0 reads it as one), and no engine here
            # reads documents; the URL is checked for shape by validation only.
            continue
        for i, url in enumerate(req.media.get(name, [])):
            items.append(MediaItem(name, f"{name}[{i}]", url, kind))
    for i, frame in enumerate(req.media.get("keyframes", [])):
        items.append(MediaItem("keyframes", f"keyframes[{i}].image_url", frame["image_url"], "image",
                               frame_index=frame["frame_index"]))
    for i, element in enumerate(req.media.get("elements", [])):
        items.append(MediaItem("elements.frontal_image_url", f"elements[{i}].frontal_image_url",
                               element["frontal_image_url"], "image", element=i))
        for j, url in enumerate(element.get("reference_image_urls") or []):
            items.append(MediaItem("elements.reference_image_urls", f"elements[{i}].reference_image_urls[{j}]",
                                   url, "image", element=i))
        if element.get("video_url"):
            items.append(MediaItem("elements.video_url", f"elements[{i}].video_url", element["video_url"],
                                   "video", element=i))
    return items


def probe(file: MediaFile) -> Probed:
    """What the file holds, by the kind its field expects; a bad file is a 400 naming the field."""
    try:
        if file.kind == "image":
            return probe_image(file.path)
        if file.kind == "video":
            return probe_video(file.path)
        if file.kind == "audio":
            return probe_audio(file.path)
    except MediaProbeError as exc:
        raise InvalidRequest([Issue(path=field_path(file.field), message=str(exc), code="invalid_media")],
                             message=f"{file.field}: {exc}") from None
    raise InvalidRequest([Issue(path=field_path(file.field), message=f"{file.kind} inputs are not supported")])


async def _all_or_first_error(coros: list[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest (no download keeps writing) and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


@dataclass(frozen=True)
class PreparedInputs:
    directory: Path
    inputs: Inputs  # what the job stores and the engines read (RenderSpec.inputs)
    probed: dict[str, list[tuple[MediaFile, Probed]]]

    def first_info(self, key: str) -> Probed | None:
        found = self.probed.get(key)
        return found[0][1] if found else None

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


async def prepare_inputs(
    req: VideoRequest, spec: ModelSpec, *, fetcher: GuardedFetcher, staging_root: Path,
    max_bytes: dict[str, int] | None = None,
) -> PreparedInputs:
    """Fetch, probe and check every media input of `req`; raises a 4xx naming the field on any problem."""
    caps = {**DEFAULT_MAX_BYTES, **(max_bytes or {})}
    directory = staging_root / uuid.uuid4().hex
    directory.mkdir(parents=True, exist_ok=True)
    limit = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
    items = media_items(req)

    async def fetch_and_probe(n: int, item: MediaItem) -> tuple[MediaItem, MediaFile, Probed]:
        async with limit:
            file = await fetcher.fetch(item.url, field=item.label, kind=item.kind, max_bytes=caps[item.kind],
                                       dest=directory / f"{n:03d}")
        # Probing parses containers: keep it off the event loop.
        return item, file, await asyncio.to_thread(probe, file)

    try:
        results = await _all_or_first_error([fetch_and_probe(n, item) for n, item in enumerate(items)])
        probed: dict[str, list[tuple[MediaFile, Probed]]] = {}
        prepared: dict[str, list[PreparedInput]] = {}
        for item, file, info in results:
            probed.setdefault(item.key, []).append((file, info))
            prepared.setdefault(item.key, []).append(PreparedInput(
                field=file.field, path=str(file.path.resolve()), mime=file.mime, sha256=file.sha256,
                size=file.size, info=info, frame_index=item.frame_index, element=item.element))
        check_media_limits(spec, req, probed)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return PreparedInputs(directory, {key: tuple(items) for key, items in prepared.items()}, probed)
