"""Everything the API's routes share, built once per app from the settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vidgate.api.ratelimit import RateLimiter
from vidgate.catalog.models import Catalog, load_catalog
from vidgate.catalog.pricing import PriceTable
from vidgate.db import Database
from vidgate.jobs.store import JobStore, p80
from vidgate.settings import Settings
from vidgate.storage.local import LocalStorage
from vidgate.storage.signing import DeliveryUrlSigner

EXECUTION_TIME_CACHE_SECONDS = 5.0


@dataclass
class AppContext:
    settings: Settings
    db: Database
    store: JobStore
    catalog: Catalog
    prices: PriceTable
    storage: LocalStorage
    signer: DeliveryUrlSigner
    limiter: RateLimiter
    _p80_cache: dict[str, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        db = Database(settings.resolved_database_url)
        return cls(
            settings=settings,
            db=db,
            store=JobStore(db),
            catalog=load_catalog(settings.catalog_file),
            prices=PriceTable.load(settings.price_file),
            storage=LocalStorage(settings.media_dir),
            signer=DeliveryUrlSigner(settings.resolved_secret_key, settings.download_url_ttl_seconds),
            limiter=RateLimiter(
                {"queue": settings.rate_limit_queue_per_min, "retrieve": settings.rate_limit_retrieve_per_min}
            ),
        )

    async def average_execution_ms(self, model: str) -> int:
        """P80 of this model's past jobs (cached briefly: retrieve is polled often)."""
        now = time.monotonic()
        cached = self._p80_cache.get(model)
        if cached and now - cached[0] < EXECUTION_TIME_CACHE_SECONDS:
            return cached[1]
        value = p80(await self.store.recent_execution_ms(model)) or self.settings.default_average_execution_ms
        self._p80_cache[model] = (now, value)
        return value
