"""The worker loop: claim → render with progress and heartbeat → store → complete (or fail and refund).

Each worker is its own process (so rendering never blocks the API's event loop), runs at a lower CPU
priority than the API, and sleeps on a wake-up socket while there is nothing to do.

A database that goes away for a while (PostgreSQL restarting, failing over) does not stop a worker: it keeps
rendering through missed heartbeats, waits for the database before recording a job's outcome, and claims again
once it answers. If the outage outlasts the lease, another worker re-claims the job and this one's next
heartbeat says so. A completion whose commit's answer was lost is settled by reading the job back. Likewise a
storage outage: a finished video waits, still leased, until it can be uploaded.

Every attempt uploads under a key of its own (`<job id>-<lease token>.mp4`), so a worker that died between its
upload and its completion leaves an object no job names; the attempt that finishes the job removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vidgate.catalog.request import JobPayload
from vidgate.db import open_database
from vidgate.engines.base import Engine, ProgressCallback, TerminalFailure
from vidgate.engines.planning import plan_render
from vidgate.engines.registry import CPU_ENGINES, engine_for
from vidgate.errors import DatabaseUnavailable
from vidgate.jobs.states import JobStatus, job_error
from vidgate.jobs.store import Claim, ClaimScope, JobStore
from vidgate.jobs.wakeup import Wakeups, wakeups_for
from vidgate.logs import job_context, setup_logging
from vidgate.settings import Settings, node_description
from vidgate.storage import storage_from_settings
from vidgate.storage.base import Storage, StorageUnavailable

log = logging.getLogger("vidgate.worker")
T = TypeVar("T")

# Waiting out a database outage: first retry soon (a restart takes a second or two), then back off.
DB_RETRY_FIRST_S = 0.25
DB_RETRY_MAX_S = 5.0
# Waiting out a storage outage with a finished video in hand.
STORAGE_RETRY_FIRST_S = 0.5
STORAGE_RETRY_MAX_S = 10.0


HEARTBEAT_MAX_S = 1.0


class LeaseLost(Exception):
    """Another worker owns the job now; this render must stop."""


def discard_inputs(request: JobPayload) -> None:
    """The fetched inputs are only needed until the job is finished one way or the other."""
    if request.inputs_dir:
        shutil.rmtree(request.inputs_dir, ignore_errors=True)


class Worker:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.db = open_database(settings.resolved_database_url)
        self.store = JobStore(self.db)
        self.storage = storage_from_settings(settings)
        self.scope = claim_scope(settings)
        self._engines: dict[str, Engine] = {}
        self._finishing: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()

    def engine(self, name: str) -> Engine:
        """The worker's engine of that name, made once: a diffusers engine keeps its pipelines loaded."""
        if name not in self._engines:
            s = self.settings
            self._engines[name] = engine_for(name, preset=s.x264_preset, crf=s.x264_crf,
                                             upscale_method=s.upscale_method, bindings=s.diffusers_models,
                                             device=s.worker_device, upstreams=s.upstreams)
        return self._engines[name]

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, max_jobs: int | None = None) -> None:
        """Work until stopped (or until `max_jobs` jobs were handled, for tests and benchmarks)."""
        self.db.create_schema()
        # A short socket name: Unix socket paths are limited to ~108 bytes.
        wake = wakeups_for(self.db, self.settings.wake_dir, f"w{os.getpid()}-{id(self) % 10_000}")
        handled = 0
        outage = DB_RETRY_FIRST_S
        try:
            while not self._stop.is_set():
                try:
                    taken = await self.store.take_next(
                        self.name, self.settings.lease_seconds, self.settings.max_attempts, self.scope
                    )
                except DatabaseUnavailable:
                    # Nothing is held yet, so nothing is at stake: try again later (stop still works meanwhile).
                    log.warning("database unavailable; claiming again in %.2f s", outage)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), outage)
                    outage = min(outage * 2, DB_RETRY_MAX_S)
                    continue
                outage = DB_RETRY_FIRST_S
                for job_id in taken.ended:  # ended by the sweep: whatever their dead workers uploaded is no one's
                    await remove_uploads(self.storage, job_id)
                claim = taken.claim
                if claim is None:
                    await self._sleep_until_woken(wake)
                    continue
                with job_context(claim.job.id):  # every line logged about this job carries its id
                    await self.process(claim)
                handled += 1
                if max_jobs is not None and handled >= max_jobs:
                    break
            await self.drain()
        finally:
            wake.close()
            await self.db.aclose()

    async def _sleep_until_woken(self, wake: Wakeups) -> None:
        woken = asyncio.ensure_future(wake.wait(self.settings.idle_poll_seconds))
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({woken, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not woken.done():  # stopping: the wake-up source is closed next
                woken.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await woken

    async def process(self, claim: Claim) -> None:
        """Render one job. An engine in two stages (`generate` on the device, then `encode`) has its encode
        finished in the background, so the next job's generation overlaps it; at most one waits at a time."""
        job = JobRun(self, claim)
        engine = job.engine
        if hasattr(engine, "generate") and hasattr(engine, "encode"):
            produced = await job.stage(lambda progress: engine.generate(job.spec, progress))
            if produced is None:
                return
            await self.drain()
            self._finishing = asyncio.ensure_future(
                job.finish(lambda progress: engine.encode(job.spec, produced.value, job.scratch, progress)))
            return
        await job.finish(lambda progress: engine.render(job.spec, job.scratch, progress))

    async def drain(self) -> None:
        """Wait for the job whose encode is finishing in the background, if any."""
        if self._finishing is not None:
            await self._finishing
            self._finishing = None

    async def when_db_answers(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` (a store operation), repeated through a database outage until it gets an answer.

        For the writes that settle a job the worker holds (its final heartbeat, its failure): giving up would
        leave the outcome to the lease's expiry and a new render. Only safe for calls whose repetition cannot
        do a thing twice: they are all conditional on the lease token, so a repeat after a commit whose answer
        was lost matches nothing. (`complete` needs more; see JobRun.complete.)"""
        delay = DB_RETRY_FIRST_S
        while True:
            try:
                return await call()
            except DatabaseUnavailable:
                log.warning("%s: database unavailable; retrying in %.2f s", what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_S)


@dataclass(frozen=True)
class Produced:
    value: Any


class JobRun:
    """One claimed job through its stages: each runs in a thread while the lease is heartbeaten, and every
    outcome (done, lease lost, failed for good, failed for now) is handled in one place."""

    def __init__(self, worker: Worker, claim: Claim) -> None:
        self.worker, self.job, self.token = worker, claim.job, claim.token
        log.info("job %s attempt %d: rendering %s", self.job.id, self.job.attempts, self.job.model)
        self.request = JobPayload.from_json(self.job.request)
        self.spec = plan_render(self.job.engine, self.request)
        self.engine = worker.engine(self.job.engine)
        self.scratch = worker.storage.scratch_dir() / f"{self.job.id}-{self.token[:8]}.mp4"
        self.progress = 0.0
        self.lost = threading.Event()

    def on_progress(self, fraction: float) -> None:
        self.progress = fraction
        if self.lost.is_set():
            raise LeaseLost(self.job.id)

    async def heartbeating(self, work: Callable[[ProgressCallback], Any]) -> Any:
        """Run `work(progress)` in a thread, extending the lease until it returns."""
        settings, store = self.worker.settings, self.worker.store
        task = asyncio.ensure_future(asyncio.to_thread(work, self.on_progress))
        # At least every second: progress reaches the job's followers live, and a client's cancel stops the
        # render within about a second (the heartbeat is what tells this worker).
        every = max(0.2, min(settings.lease_seconds / 3, HEARTBEAT_MAX_S))
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            try:
                held = await store.heartbeat(self.job.id, self.token, settings.lease_seconds, self.progress)
            except DatabaseUnavailable:
                # Unknown, not lost: keep rendering. If the outage outlasts the lease and another worker takes
                # the job, a later heartbeat says so; if not, this render is still the one that counts.
                log.warning("job %s: heartbeat missed, database unavailable", self.job.id)
                continue
            if not held:
                self.lost.set()

    async def stage(self, work: Callable[[ProgressCallback], Any]) -> Produced | None:
        """A first stage: its result, or None when the job ended here (its outcome already recorded)."""
        try:
            return Produced(await self.heartbeating(work))
        except BaseException as exc:
            await self.ended(exc)
            return None

    async def finish(self, work: Callable[[ProgressCallback], Any]) -> None:
        """The last stage: write the MP4, store it and complete the job."""
        worker, job, token = self.worker, self.job, self.token
        try:
            await self.heartbeating(work)
            if self.lost.is_set() or not await worker.when_db_answers(
                    f"job {job.id}: heartbeat", lambda: worker.store.heartbeat(job.id, token,
                                                                               worker.settings.lease_seconds, 1.0)):
                raise LeaseLost(job.id)
            media_key = f"{job.id}-{token[:8]}.mp4"
            # In a thread, still heartbeating: an upload to object storage can take a while.
            self.progress = 1.0
            await self.heartbeating(lambda _progress: self.upload(media_key))
            if self.lost.is_set() or not await self.complete(media_key):
                # Not ours to complete: the object would belong to no job.
                await asyncio.to_thread(worker.storage.delete, media_key)
                raise LeaseLost(job.id)
            log.info("job %s completed", job.id)
            if job.attempts > 1:
                await remove_uploads(worker.storage, job.id, keep=media_key)
            discard_inputs(self.request)
            finished = getattr(self.engine, "finished", None)
            if finished is not None:  # e.g. the upstream engine deletes the upstream's copy
                await asyncio.to_thread(finished, self.spec)
        except BaseException as exc:
            await self.ended(exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.scratch.unlink()

    def upload(self, media_key: str) -> None:
        """Store the finished MP4, waiting out a storage outage (in the render's thread, so the lease is kept
        meanwhile): the video is done, and failing the attempt would only render it again, or fail it for good
        once the attempts are used up. Gives up when the lease is lost."""
        delay = STORAGE_RETRY_FIRST_S
        while True:
            try:
                self.worker.storage.put_file(media_key, self.scratch)
                return
            except StorageUnavailable:
                if self.lost.is_set():
                    raise LeaseLost(self.job.id) from None
                log.warning("job %s: storage unavailable; uploading again in %.1f s", self.job.id, delay)
                time.sleep(delay)
                delay = min(delay * 2, STORAGE_RETRY_MAX_S)

    async def complete(self, media_key: str) -> bool:
        """Record the job COMPLETED with `media_key`: True when it is, False when this worker no longer holds it.

        A completion whose commit's answer was lost (the database went away at that moment) is not simply
        repeated: if it did commit, the job is no longer PROCESSING and a repeat would report the lease lost,
        and the caller would delete the video of a completed job. The job, read back, says what happened."""
        store, job = self.worker.store, self.job
        try:
            return await store.complete(job.id, self.token, media_key)
        except DatabaseUnavailable:
            log.warning("job %s: database unavailable while completing; checking the outcome when it is back", job.id)
        delay = DB_RETRY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX_S)
            try:
                current = await store.get(job.id)
                if current is None:
                    return False
                if current.status is JobStatus.COMPLETED:
                    return current.media_key == media_key  # ours committed, or another worker's did
                if current.status is not JobStatus.PROCESSING or current.lease_token != self.token:
                    return False
                return await store.complete(job.id, self.token, media_key)  # it did not commit: again
            except DatabaseUnavailable:
                log.warning("job %s: database still unavailable; retrying in %.2f s", job.id, delay)

    async def ended(self, exc: BaseException) -> None:
        """Record how a job that did not complete ended; re-raise what is not a job outcome (cancellation)."""
        worker, job, token = self.worker, self.job, self.token
        settings = worker.settings
        with contextlib.suppress(FileNotFoundError):
            self.scratch.unlink()
        if isinstance(exc, LeaseLost):
            now = await worker.store.get(job.id)
            if now is not None and now.status is JobStatus.CANCELED:
                # The client canceled it (its heartbeat settled that, refund included): free what the engine
                # still holds elsewhere (an upstream provider's job), and the inputs.
                log.info("job %s: canceled by the client; render stopped", job.id)
                canceled = getattr(self.engine, "canceled", None)
                if canceled is not None:
                    await asyncio.to_thread(canceled, self.spec)
                discard_inputs(self.request)
            else:
                log.warning("job %s: lease lost, another worker owns it now", job.id)
        elif isinstance(exc, TerminalFailure):
            log.error("job %s failed for good: %s", job.id, exc)
            error = job_error(str(exc)[:1000], exc.public_message)
            status = await worker.when_db_answers(f"job {job.id}: recording its failure", lambda: (
                worker.store.fail_attempt(job.id, token, error, max_attempts=settings.max_attempts,
                                          retryable=False)))
            if status is JobStatus.FAILED and job.attempts > 1:
                await remove_uploads(worker.storage, job.id)
            discard_inputs(self.request)
        elif isinstance(exc, Exception):  # an engine failure: retried, then failed and refunded
            log.error("job %s attempt %d failed", job.id, job.attempts, exc_info=exc)
            error = f"{type(exc).__name__}: {exc}"[:1000]
            status = await worker.when_db_answers(f"job {job.id}: recording a failed attempt", lambda: (
                worker.store.fail_attempt(job.id, token, error, max_attempts=settings.max_attempts)))
            log.info("job %s is now %s", job.id, status)
            if status is JobStatus.FAILED:
                if job.attempts > 1:
                    await remove_uploads(worker.storage, job.id)
                discard_inputs(self.request)
        else:
            raise exc


async def remove_uploads(storage: Storage, job_id: str, *, keep: str | None = None) -> None:
    """Delete the videos that attempts of a job uploaded and never completed with (a worker that died between
    its upload and its completion leaves one: its key has that attempt's token, so no job points at it). Only
    once the job is finished, and never `keep`, the video it completed with: a stale worker still rendering it
    can no longer complete, and deletes its own upload when it finds that out."""
    try:
        leftovers = [k for k in await asyncio.to_thread(storage.keys_with_prefix, f"{job_id}-") if k != keep]
        for key in leftovers:
            await asyncio.to_thread(storage.delete, key)
    except Exception:  # the job's outcome stands; an object left here is only wasted space
        log.warning("job %s: could not remove the uploads of unfinished attempts", job_id, exc_info=True)
    else:
        if leftovers:
            log.info("job %s: removed %d upload(s) of unfinished attempts", job_id, len(leftovers))


def claim_scope(settings: Settings) -> ClaimScope:
    """The jobs this worker takes: its engines (every CPU engine, and diffusers when models are bound to it),
    diffusers jobs only for the models bound here, and only `worker_models` when set."""
    bound = frozenset(settings.diffusers_models)
    engines = set(settings.worker_engines or CPU_ENGINES)
    if not settings.worker_engines:
        engines |= {"diffusers"} if bound else set()
        engines |= {"upstream"} if settings.upstreams else set()
    models = frozenset(settings.worker_models) if settings.worker_models else None
    return ClaimScope(engines=frozenset(engines), model_engines=frozenset({"diffusers"}), engine_models=bound,
                      models=models)


def run_worker_process(settings: Settings) -> None:
    """Entry point of a `vidgate worker` process."""
    setup_logging(settings.log_format)
    with contextlib.suppress(OSError):
        os.nice(settings.render_nice)
    worker = Worker(settings)
    scope = worker.scope
    log.info("%s; engines: %s%s%s", node_description(settings, f"worker {worker.name}"),
             ",".join(sorted(scope.engines or ())), f"; models: {','.join(sorted(scope.models))}" if scope.models
             else "", f"; device: {settings.worker_device}" if settings.worker_device else "")

    async def main() -> None:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    started = time.time()
    asyncio.run(main())
    log.info("worker %s stopped after %.0f s", worker.name, time.time() - started)
