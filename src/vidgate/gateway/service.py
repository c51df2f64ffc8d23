"""The gateway on the API side: price a routed request from its upstream, and submit it before answering.

Queue submits to the upstream *before* it answers the client (the README says why): an upstream 400 or 409
reaches the client unchanged, with nothing charged, and the upstream's queue id is stored with the job in the
transaction that charges it. The narrow window: if this process dies after the upstream accepted the job and
before that transaction commits, the client gets no answer and is not charged, and the upstream job is left
for the operator (it shows in the upstream account's usage; `vidgate upstreams check` does not list it).
"""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from vidgate.catalog.request import MEDIA_LIST_FIELDS, MEDIA_URL_FIELDS, MediaFacts, UpstreamJob, VideoRequest
from vidgate.db import Database, jobs
from vidgate.errors import RateLimited, ServiceUnavailable, VidgateError
from vidgate.gateway.client import (
    QuoteCache,
    UpstreamClient,
    UpstreamError,
    UpstreamRejected,
    report,
)
from vidgate.gateway.config import Route
from vidgate.jobs.states import JobStatus

# Fields that carry media (never sent to a quote: the upstream prices from the facts we measured).
MEDIA_FIELDS = {*MEDIA_URL_FIELDS, *MEDIA_LIST_FIELDS, "elements", "keyframes", "image_references",
                "video_references"}
ACTIVE = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
RETRY_AFTER_S = 5


class UpstreamAnswer(VidgateError):
    """The upstream's own refusal (400, 409, ...), relayed to the client unchanged."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body.get("error", "")) if isinstance(body, dict) else "rejected upstream")
        self.status_code = status
        self._body = body

    def body(self) -> Any:
        return self._body


def quote_body(body: dict[str, Any], req: VideoRequest, facts: MediaFacts) -> dict[str, Any]:
    """What the upstream needs to price the request: its fields without media, plus measured facts."""
    out = {k: v for k, v in body.items() if k not in MEDIA_FIELDS}
    out["model"] = req.model_echo or req.model
    if facts.source_seconds is not None:
        out["duration"] = f"{math.ceil(facts.source_seconds)}s"
        if facts.source_height is not None:
            out["input_height"] = facts.source_height
    if facts.reference_video_seconds:
        out["reference_video_total_duration"] = round(facts.reference_video_seconds, 3)
    return out


class Gateway:
    """One client per upstream (kept alive) and a shared quote cache."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.cache = QuoteCache(ttl_s=min((r.config.quote_cache_s for r in routes.values()), default=30.0))
        self._clients: dict[str, UpstreamClient] = {}

    def client(self, route: Route) -> UpstreamClient:
        client = self._clients.get(route.upstream)
        if client is None:
            spec = route.config.client_spec(route.upstream, route.api_key)
            client = self._clients[route.upstream] = UpstreamClient(spec, quote_cache=self.cache)
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    async def price(self, route: Route, body: dict[str, Any]) -> Decimal:
        """The upstream's quote (cached briefly) plus the markup."""
        return route.price(await self._call(route, "quote", body))

    async def submit(self, route: Route, body: dict[str, Any], model: str) -> UpstreamJob:
        submitted = await self._call(route, "submit", body)
        return UpstreamJob(route.upstream, submitted.queue_id, model, submitted.download_url,
                           deadline_at=time.time() + route.config.deadline_s)

    async def check_capacity(self, db: Database, route: Route) -> None:
        """At most `max_in_flight` of an upstream's jobs generate at once; the next client waits (429)."""
        models = sorted(m for m, r in self.routes.items() if r.upstream == route.upstream)
        active = await db.read(lambda conn: conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.engine == "upstream", jobs.c.status.in_(ACTIVE),
                                                         jobs.c.model.in_(models))).scalar_one())
        if active >= route.config.max_in_flight:
            raise RateLimited("Too many videos are being generated right now; retry shortly",
                              headers={"Retry-After": str(RETRY_AFTER_S)})

    async def _call(self, route: Route, operation: str, body: dict[str, Any]) -> Any:
        client = self.client(route)
        try:
            return await asyncio.to_thread(getattr(client, operation), body)
        except UpstreamRejected as exc:
            raise UpstreamAnswer(exc.status or 400, exc.body) from None
        except UpstreamError as exc:
            report(route.upstream, exc)
            raise ServiceUnavailable("The video service is temporarily unavailable; please retry shortly",
                                     headers={"Retry-After": str(RETRY_AFTER_S)}) from None
