"""Everything the API's routes share, built once per app from the settings."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from vidgate.api.eventhub import EventHub
from vidgate.api.ratelimit import RateLimiter, rate_limiter_from_settings
from vidgate.catalog.models import Catalog, ModelSpec
from vidgate.catalog.pricing import PriceTable
from vidgate.catalog.request import MediaFacts, VideoRequest
from vidgate.db import Database, open_database
from vidgate.gateway.config import Route
from vidgate.gateway.service import Gateway
from vidgate.jobs.estimates import Estimate, Estimator, recent_finished
from vidgate.jobs.store import Job, JobStore
from vidgate.media.fetch import GuardedFetcher
from vidgate.media.inputs import PreparedInputs, prepare_inputs
from vidgate.media.types import VideoInfo
from vidgate.served_catalog import served_catalog
from vidgate.settings import Settings
from vidgate.storage import Storage, storage_from_settings
from vidgate.storage.signing import DeliveryUrlSigner

EXECUTION_TIME_CACHE_SECONDS = 5.0


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: JobStore
    catalog: Catalog
    prices: PriceTable
    routes: dict[str, Route]  # gateway: routed model id -> its upstream
    gateway: Gateway
    storage: Storage
    signer: DeliveryUrlSigner
    limiter: RateLimiter
    fetcher: GuardedFetcher
    hub: EventHub
    _estimator: tuple[float, Estimator] | None = None
    _averages: dict[tuple[str, str | None], int] = field(default_factory=dict)
    _estimator_rebuild: asyncio.Future[Estimator] | None = None

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        # First: an unreachable rate-limit Redis is a RateLimitConfigError naming the setting, before anything
        # (a database engine) is opened that the failed start would leave behind.
        limiter = rate_limiter_from_settings(settings)
        db = open_database(settings.resolved_database_url)
        served = served_catalog(settings)
        return cls(
            settings=settings,
            db=db,
            store=JobStore(db),
            hub=EventHub(db),
            catalog=served.catalog,
            prices=served.prices,
            routes=served.routes,
            gateway=Gateway(served.routes),
            storage=storage_from_settings(settings),
            signer=DeliveryUrlSigner(settings.resolved_secret_key, settings.download_url_ttl_seconds),
            limiter=limiter,
            fetcher=GuardedFetcher(
                allow_hosts=settings.media_fetch_allow_hosts, connect_timeout=settings.media_fetch_connect_timeout,
                read_timeout=settings.media_fetch_read_timeout, max_redirects=settings.media_fetch_max_redirects,
            ),
        )

    async def prepare_media(self, req: VideoRequest, spec: ModelSpec) -> tuple[PreparedInputs | None, MediaFacts]:
        """Fetch, probe and check the request's media; the files, and the measured facts pricing reads."""
        if not req.media:
            return None, MediaFacts()
        prepared = await prepare_inputs(req, spec, fetcher=self.fetcher,
                                        staging_root=self.settings.data_dir / "inputs")
        return prepared, media_facts(prepared)

    async def estimator(self) -> Estimator:
        """What past jobs say about run times (rebuilt at most every few seconds: retrieve is polled often).

        One rebuild at a time: the polls that find it out of date meanwhile answer from the one they have (the
        first ever waits for it), instead of each reading the history again at once, in threads."""
        current = self._estimator
        if current is not None and time.monotonic() - current[0] < EXECUTION_TIME_CACHE_SECONDS:
            return current[1]
        rebuild = self._estimator_rebuild
        if rebuild is None:
            rebuild = self._estimator_rebuild = asyncio.ensure_future(self._rebuild_estimator())
            rebuild.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen by its waiters
        if current is not None:
            return current[1]
        return await asyncio.shield(rebuild)

    async def _rebuild_estimator(self) -> Estimator:
        try:
            history = await self.db.read(recent_finished)
            estimator = Estimator(history, self.settings.default_average_execution_ms / 1000)
            self._estimator, self._averages = (time.monotonic(), estimator), {}
            return estimator
        finally:
            self._estimator_rebuild = None

    async def estimate(self, job: Job) -> Estimate:
        spec = self.catalog.get(job.model)
        duration = job.request.get("duration_s")
        return (await self.estimator()).estimate(
            job.model, spec.engine if spec else job.engine, job.resolution,
            float(duration) if isinstance(duration, int | float) else None)

    async def average_execution_ms(self, model: str, resolution: str | None = None) -> int:
        """Venice's `average_execution_time` for a job of this model and resolution: from queueing to done
        (kept until the estimator is rebuilt: every retrieve poll asks)."""
        estimator = await self.estimator()
        key = (model, resolution)
        if (known := self._averages.get(key)) is not None:
            return known
        spec = self.catalog.get(model)
        estimate = estimator.estimate(model, spec.engine if spec else "", resolution, None)
        self._averages[key] = value = int(estimate.total_s * 1000)
        return value


def media_facts(prepared: PreparedInputs) -> MediaFacts:
    """The measured facts of prepared media that pricing needs (source length and size, reference seconds)."""
    source = prepared.first_info("video_url")
    clips = [info for _, info in prepared.probed.get("reference_video_urls", []) if isinstance(info, VideoInfo)]
    return MediaFacts(
        source_seconds=source.duration if isinstance(source, VideoInfo) else None,
        source_height=source.height if isinstance(source, VideoInfo) else None,
        source_fps=source.fps if isinstance(source, VideoInfo) else None,
        reference_video_seconds=sum(c.duration for c in clips) if clips else None,
        reference_image_count=len(prepared.probed.get("reference_image_urls", [])),
    )
