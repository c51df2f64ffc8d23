"""`GET /readyz`: may a load balancer send this node requests? (vidgate extension)

    200 {"ready": true,  "checks": {"database": "ok", "storage": "ok", "rate_limits": "ok", "engines": "ok"},
         "failing": [], "engines": ["image", "procedural", ...], "upscaler": "realesrgan"}
    503 {"ready": false, "checks": {"storage": "failed: ...", ...}, "failing": ["storage"], ...}

`/healthz` says the process answers; this says it can serve: the database answers a trivial query, the video
storage is there and writable (local: a file is made and removed in its scratch folder; S3: the bucket answers
a HEAD), the rate-limit Redis answers a PING (memory:// needs nothing), and the engines this node's workers take
can run (diffusers weights on disk; Real-ESRGAN when VIDGATE_UPSCALE_METHOD=realesrgan insists on it). The checks
run concurrently, each bounded by CHECK_TIMEOUT_S, so a hung dependency is a quick 503 rather than a probe that
times out. Cheap enough to poll every second: one query, a few system calls, and (with Redis or S3) one round
trip each. A failure's detail goes to the log; the answer names the check and a short reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from starlette.requests import Request
from starlette.routing import Route

from vidgate.api.context import AppContext
from vidgate.api.http import JSONResponse
from vidgate.api.ratelimit import RateLimitConfigError
from vidgate.engines.diffusers_models import BindingError, check_directory
from vidgate.errors import VidgateError
from vidgate.storage.base import StorageConfigError

log = logging.getLogger("vidgate.api.readyz")

CHECK_TIMEOUT_S = 3.0
# Messages written for operators (they name the setting, never a secret): shown as they are. Anything else is
# shown by its type only (a driver's message may carry a host name or a path).
OPERATOR_ERRORS = (StorageConfigError, RateLimitConfigError, BindingError, VidgateError)


class NotReady(Exception):
    """A check's own finding, worded for the operator."""


def node_engines(ctx: AppContext) -> list[str]:
    """The engines this node's workers take (worker.claim_scope, from this node's settings)."""
    from vidgate.worker import claim_scope

    return sorted(claim_scope(ctx.settings).engines)


def upscaler_in_use(method: str) -> str:
    """`lanczos` or `realesrgan`: what topaz-video-upscale renders with here (the check runs once per process)."""
    if method == "lanczos":
        return "lanczos"
    from vidgate.engines.upscale import realesrgan_problem

    return "realesrgan" if realesrgan_problem() is None else "lanczos"


def check_database(ctx: AppContext) -> Callable[[], Any]:
    async def run() -> None:
        await ctx.db.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    return run


def check_storage(ctx: AppContext) -> None:
    storage = ctx.storage
    head_bucket = getattr(storage, "check", None)
    if head_bucket is not None:  # object storage (S3): the same check that guards the start
        head_bucket()
        return
    scratch = storage.scratch_dir()
    if not scratch.is_dir():
        raise NotReady("the media directory or its .scratch folder is missing")
    # Writable for real (a read-only or full file system fails here), which os.access cannot say for root.
    fd, name = tempfile.mkstemp(dir=scratch, prefix=".readyz-")
    os.close(fd)
    os.unlink(name)


def check_engines(ctx: AppContext, engines: list[str]) -> None:
    settings = ctx.settings
    if "diffusers" in engines:
        for model_id, binding in settings.diffusers_models.items():
            check_directory(model_id, binding)
    if "upscale" in engines and settings.upscale_method == "realesrgan":
        from vidgate.engines.upscale import realesrgan_problem

        problem = realesrgan_problem()
        if problem is not None:
            raise NotReady(f"VIDGATE_UPSCALE_METHOD=realesrgan but Real-ESRGAN cannot run: {problem}")


async def _outcome(name: str, check: Callable[[], Any]) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        log.warning("readyz: %s did not answer within %.0f s", name, CHECK_TIMEOUT_S)
        return f"failed: no answer within {CHECK_TIMEOUT_S:.0f} s"
    except (NotReady, *OPERATOR_ERRORS) as exc:
        log.warning("readyz: %s failed: %s", name, exc)
        return f"failed: {exc}"
    except Exception as exc:
        log.warning("readyz: %s failed", name, exc_info=True)
        return f"failed: {type(exc).__name__}"
    return "ok"


async def readyz(request: Request) -> JSONResponse:
    ctx: AppContext = request.app.state.ctx
    engines = node_engines(ctx)

    def in_thread(fn: Callable[..., None], *args: Any) -> Callable[[], Any]:
        return lambda: asyncio.to_thread(fn, *args)

    checks = {
        "database": check_database(ctx),
        "storage": in_thread(check_storage, ctx),
        "rate_limits": in_thread(ctx.limiter.check),  # memory:// returns at once; Redis: a PING
        "engines": in_thread(check_engines, ctx, engines),
    }
    results = await asyncio.gather(*(_outcome(name, check) for name, check in checks.items()))
    outcome = dict(zip(checks, results, strict=True))
    failing = [name for name, result in outcome.items() if result != "ok"]
    upscaler = await asyncio.to_thread(upscaler_in_use, ctx.settings.upscale_method) if "upscale" in engines else None
    body = {"ready": not failing, "checks": outcome, "failing": failing, "engines": engines, "upscaler": upscaler}
    return JSONResponse(body, status_code=503 if failing else 200, headers={"Cache-Control": "no-store"})


routes = [Route("/readyz", readyz, methods=["GET"])]
