"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from vidgate.api import consents, delivery, events, jobs, models, playground, video, webhooks, x402
from vidgate.api.context import AppContext
from vidgate.api.http import JSONResponse, ResponseHeadersMiddleware, error_response
from vidgate.errors import InferenceFailed, VidgateError
from vidgate.settings import Settings
from vidgate.webhooks.dispatcher import Dispatcher

log = logging.getLogger("vidgate.api")


def create_app(settings: Settings) -> FastAPI:
    ctx = AppContext.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.db.create_schema()
        sender = Dispatcher(ctx)  # this node's share of the webhook deliveries (webhooks/dispatcher.py)
        sender.start()
        yield
        await sender.stop()
        # A top-up whose client stopped waiting is still settling: let it finish and be credited.
        from vidgate.accounts.payments import pending_settlements

        if pending := pending_settlements():
            await asyncio.wait(pending, timeout=ctx.settings.x402_settle_timeout_seconds)
        await ctx.fetcher.aclose()
        await ctx.limiter.aclose()
        await ctx.hub.close()
        ctx.db.dispose()

    app = FastAPI(title="vidgate", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.ctx = ctx

    @app.exception_handler(VidgateError)
    async def vidgate_error(request: Request, exc: VidgateError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "Invalid request parameters", "details": {"_errors": [str(exc)]}},
                            status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, InferenceFailed("An unknown error occurred"))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    # The API's routes are plain Starlette routes, first in the app's route list: they parse their own
    # bodies (Venice's error shapes), and retrieve is polled constantly, so FastAPI's per-request
    # dependency solving and nested-router matching are cost without benefit there (bench/RESULTS.md).
    app.router.routes[:0] = [*video.routes, *jobs.routes, *events.routes, *delivery.routes, *models.routes,
                             *x402.routes, *consents.routes, *webhooks.routes,
                             *playground.routes]
    app.add_middleware(ResponseHeadersMiddleware)
    return app
