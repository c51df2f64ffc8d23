"""The API node's webhook sender: a background task of the app (started and stopped by its lifespan).

It claims due deliveries with a lease (deliveries.py), sends each through the SSRF guard (media/fetch.py
`GuardedFetcher.post`: vetted and pinned again, no redirects, `webhook_timeout_seconds` in all), signs it with the
account's secret as of the attempt (signing.py), and records the attempt: 2xx is delivered; anything else (an
error status, a redirect, a refusal, a timeout) is retried after the next wait of `webhook_retry_seconds`, and the
last failure makes the delivery FAILED.

It wakes when this process queues deliveries (outbox.py `announce`) and otherwise looks every
`webhook_poll_seconds` (deliveries the workers queue, retries coming due, other nodes' expired leases). Every API
node runs one; the leases share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from vidgate.consent import iso_time
from vidgate.jobs.store import Job
from vidgate.jobs.views import JobContext, job_view
from vidgate.webhooks import outbox
from vidgate.webhooks.deliveries import Claimed, Outcome, claim_due, record_attempt
from vidgate.webhooks.signing import signed_headers

if TYPE_CHECKING:
    from vidgate.api.context import AppContext

log = logging.getLogger("vidgate.webhooks")

USER_AGENT = "vidgate-webhooks/0.1"
MAX_IN_FLIGHT = 16  # deliveries one node sends at once: one slow receiver must not hold up the others
# A wake-up comes from inside the transaction that queued the deliveries, so on PostgreSQL the claim it starts
# can run before that commit and find nothing: one more look this soon after.
RECHECK_SECONDS = 0.05
STOP_GRACE_SECONDS = 2.0


class Dispatcher:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        # Longer than an attempt can take (rendering the body, the POST's own timeout, recording it).
        self.lease_seconds = self.settings.webhook_timeout_seconds + 30.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._recheck = False
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        outbox.subscribe(self.poke)
        self._task = asyncio.create_task(self._run(), name="vidgate-webhooks")

    async def stop(self) -> None:
        """Stop claiming; give the attempts under way a moment, then cancel them (their leases run out and
        whichever node looks next sends them again)."""
        outbox.unsubscribe(self.poke)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=STOP_GRACE_SECONDS)
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    def poke(self) -> None:
        """New deliveries may be due: look now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: nothing left to wake
            loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._recheck = True
        self._wake.set()

    async def _run(self) -> None:
        while True:
            recheck, self._recheck = self._recheck, False
            self._wake.clear()
            claimed = 0
            free = MAX_IN_FLIGHT - self._in_flight
            if free > 0:
                try:
                    claimed = await self.dispatch_due(free)
                except Exception:  # the database is away, say: never let the sender die, look again later
                    log.warning("webhooks: could not claim due deliveries", exc_info=True)
            if claimed and claimed == free:
                continue  # more may be due; the slots free up as the sends finish (they wake us)
            timeout = RECHECK_SECONDS if recheck and not claimed else self.settings.webhook_poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def dispatch_due(self, limit: int) -> int:
        """Claim up to `limit` due deliveries and start sending them; how many were claimed. The events of one
        job to one URL are sent one after another, oldest first, so that a receiver sees them in order unless a
        retry intervenes (the payload's `timestamp` orders them in any case)."""
        now = time.time()
        claimed = await self.ctx.db.write(lambda conn: claim_due(conn, now, limit, self.lease_seconds))
        groups: dict[tuple[str, str | None], list[Claimed]] = {}
        for delivery in sorted(claimed, key=lambda c: c.created_at):
            groups.setdefault((delivery.url, delivery.job_id), []).append(delivery)
        self._in_flight += len(claimed)
        for group in groups.values():
            task = asyncio.create_task(self._send_all(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(claimed)

    async def _send_all(self, group: list[Claimed]) -> None:
        for delivery in group:
            try:
                await self.send(delivery)
            except Exception:  # a database error recording it: the lease runs out and it is sent again
                log.warning("webhooks: delivery %s could not be completed", delivery.id, exc_info=True)
            finally:
                self._in_flight -= 1
                if self._in_flight == MAX_IN_FLIGHT - 1:
                    self._wake.set()  # we were full: others may be waiting

    async def send(self, delivery: Claimed) -> str | None:
        """One attempt, recorded; the delivery's new status (None: its lease was lost meanwhile)."""
        body = await self.body_of(delivery)
        attempted_at = time.time()
        started = time.monotonic()
        headers = signed_headers(delivery.secret, delivery.id, body, attempted_at)
        headers["user-agent"] = USER_AGENT
        result = await self.ctx.fetcher.post(delivery.url, content=body.encode(), headers=headers,
                                             timeout=self.settings.webhook_timeout_seconds, https_only=True)
        outcome = Outcome(body, attempted_at, int((time.monotonic() - started) * 1000), result.status_code,
                          result.error)
        retry = list(self.settings.webhook_retry_seconds)
        status = await self.ctx.db.write(lambda conn: record_attempt(conn, delivery, outcome, retry))
        if not outcome.delivered:
            log.info("webhooks: %s to %s failed (%s), now %s", delivery.id, delivery.url,
                     outcome.error or f"HTTP {outcome.status_code}", status)
        return status

    async def body_of(self, delivery: Claimed) -> str:
        """The JSON body: rendered from the event's snapshot at the first attempt (outbox.py), then kept."""
        payload = json.loads(delivery.payload)
        if not outbox.is_snapshot(payload):
            return delivery.payload
        job = snapshot_job(payload)
        link = None
        base = self.settings.public_base_url
        if job.private and base:  # no request here to take a host from: a link only with a configured base
            link = f"{base.rstrip('/')}/api/v1/video/download/{self.ctx.signer.token(job.id)}"
        context = JobContext(await self.ctx.estimate(job), payload["queue_position"], payload["running"], link)
        data = job_view(job, context, now=payload["at"])
        return orjson.dumps({"type": payload["type"], "timestamp": iso_time(payload["at"]), "data": data}).decode()


def snapshot_job(payload: dict[str, Any]) -> Job:
    """The job as the event left it. The request is reduced to what the estimate reads (its duration); the
    leases and the media key are not part of any view."""
    row = {**payload["job"], "request_json": json.dumps({"duration_s": payload["duration_s"]}),
           "lease_owner": None, "lease_token": None, "lease_expires_at": None, "media_key": None}
    return Job.from_row(row)
