"""One per API process: reads the job event log (every job change writes it, in the same transaction, on any API
node or worker) and fans each new event out to the live streams that follow that job or account. One reader
however many streams are open; it reads only while someone listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import Connection

from vidgate.db import Database
from vidgate.jobs.events import JobEvent, events_after, events_with_ids, newest_event_id

log = logging.getLogger("vidgate.events")

POLL_SECONDS = 0.1  # how often the hub reads the log while anyone is listening (one indexed query)
# PostgreSQL hands out event ids when rows are inserted and transactions commit in any order, so an id below the
# newest one read may still appear: it is looked for this long (a rolled-back insert leaves its id unused).
GAP_WAIT_SECONDS = 30.0
MAX_GAP_IDS = 1000  # a jump of more ids than this (a sequence moved on after a failover) is not waited for
FRAMES_KEPT = 256  # rendered events kept for the streams still to send them
MAX_BACKLOG = 1000  # events queued for one slow stream before it is closed (its client resumes by id)


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(MAX_BACKLOG)

    def deliver(self, event: JobEvent | None) -> bool:
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False


class EventHub:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._followers: defaultdict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._last_id = 0
        self._frames: OrderedDict[tuple[int, str], asyncio.Future[bytes]] = OrderedDict()
        self._wake = asyncio.Event()
        self._started: asyncio.Future[None] | None = None
        self._gaps: dict[int, float] = {}  # ids below `_last_id` not yet read -> when first missed

    def poke(self) -> None:
        """This process just committed a job change: read the log now rather than at the next poll."""
        self._wake.set()

    async def frame(self, event: JobEvent, variant: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """The event as sent, rendered once however many streams send it (`variant`: what else the bytes depend
        on, the base URL of download links)."""
        key = (event.id, variant)
        pending = self._frames.get(key)
        if pending is None:
            pending = self._frames[key] = asyncio.ensure_future(render())
            while len(self._frames) > FRAMES_KEPT:
                self._frames.popitem(last=False)
        return await asyncio.shield(pending)

    @contextlib.asynccontextmanager
    async def follow(self, kind: str, key: str) -> AsyncIterator[Subscription]:
        """Receive the events of a job (`kind` "job") or an account ("account") while inside.

        Inside means the hub's cursor was read before: whatever the caller reads from the log next (its snapshot
        of what it missed) and every event after the cursor reach it, so no event falls between the two."""
        subscription = Subscription()
        self._followers[(kind, key)].add(subscription)
        if self._task is None or self._task.done():
            self._started = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run(self._started))
        try:
            assert self._started is not None
            await asyncio.shield(self._started)
            yield subscription
        finally:
            followers = self._followers.get((kind, key))
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._followers[(kind, key)]

    async def _run(self, started: asyncio.Future[None]) -> None:
        try:
            self._last_id = await self.db.read(newest_event_id)
        except Exception as error:  # the database is away: the streams that wait for the start fail with it
            started.set_exception(error)
            return
        started.set_result(None)
        while self._followers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                events = await self.db.read(self._new_events)
            except Exception:  # the database is away: streams stay open and catch up when it is back
                log.warning("event hub: could not read the job event log", exc_info=True)
                continue
            for event in self._unseen(events):
                for key in (("job", event.job_id), ("account", event.account_id)):
                    for subscription in list(self._followers.get(key, ())):
                        if not subscription.deliver(event):
                            self._followers[key].discard(subscription)
                            subscription.queue = asyncio.Queue(1)
                            subscription.deliver(None)  # too slow: close it

    def _new_events(self, conn: Connection) -> list[JobEvent]:
        """Events after the cursor, and those of the ids it passed that have appeared since."""
        events = events_after(conn, self._last_id)
        return events + events_with_ids(conn, list(self._gaps)) if self._gaps else events

    def _unseen(self, events: list[JobEvent]) -> list[JobEvent]:
        """The events not delivered yet, oldest first; moves the cursor and keeps track of the ids it passed."""
        now = time.monotonic()
        unseen = []
        for event in sorted(events, key=lambda e: e.id):
            if self._gaps.pop(event.id, None) is not None:
                unseen.append(event)
            elif event.id > self._last_id:
                if event.id - self._last_id - 1 <= MAX_GAP_IDS:
                    self._gaps.update(dict.fromkeys(range(self._last_id + 1, event.id), now))
                self._last_id = event.id
                unseen.append(event)
        for gap, since in list(self._gaps.items()):
            if now - since > GAP_WAIT_SECONDS:
                del self._gaps[gap]
        return unseen

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
