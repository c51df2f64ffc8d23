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

from vidgate.api import (
    consents,
    delivery,
    docs,
    events,
    jobs,
    metrics,
    models,
    playground,
    readyz,
    video,
    webhooks,
    x402,
)
from vidgate.api.context import AppContext
from vidgate.api.http import JSONResponse, ResponseHeadersMiddleware, error_response
from vidgate.api.observe import ObserveMiddleware
from vidgate.errors import (
    InferenceFailed,
    PaymentRequired,
    VidgateError,
    insufficient_balance,
    insufficient_balance_message,
)
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
        await ctx.db.aclose()

    # No generated /openapi.json or /docs: FastAPI cannot describe the Starlette routes below, and its /docs loads
    # Swagger UI from a CDN. api/docs.py serves both, from the package.
    app = FastAPI(title="vidgate", version="0.1.0", lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.ctx = ctx
    balance_message = insufficient_balance_message(settings.topup_url, venice_texts=settings.venice_texts)

    @app.exception_handler(VidgateError)
    async def vidgate_error(request: Request, exc: VidgateError) -> JSONResponse:
        if isinstance(exc, PaymentRequired) and exc.body().get("code") == "INSUFFICIENT_BALANCE":
            exc = insufficient_balance(balance_message)  # raised by the ledger, which has no settings at hand
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
        # Outside ObserveMiddleware (Starlette runs this handler in its outermost layer): the id is passed here.
        log.exception("unhandled error on %s %s", request.method, request.url.path,
                      extra={"request_id": request.scope.get("state", {}).get("request_id")})
        return error_response(request, InferenceFailed("An unknown error occurred"))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    # The API's routes are plain Starlette routes, first in the app's route list: they parse their own
    # bodies (Venice's error shapes), and retrieve is polled constantly, so FastAPI's per-request
    # dependency solving and nested-router matching are cost without benefit there (bench/RESULTS.md).
    app.router.routes[:0] = [*video.routes, *jobs.routes, *events.routes, *delivery.routes, *models.routes,
                             *x402.routes, *consents.routes, *webhooks.routes,
                             *playground.routes, *readyz.routes, *docs.routes]
    stats = None
    if settings.metrics_enabled:
        app.state.metrics = metrics.Metrics(ctx.db, settings.resolved_database_url)
        stats = app.state.metrics.requests
        app.router.routes.extend(metrics.routes)
    # Added first, so it runs inside ResponseHeadersMiddleware, which makes the request id it logs with.
    if stats is not None or settings.access_log:
        app.add_middleware(ObserveMiddleware, stats=stats, log_requests=settings.access_log,
                           log_polls=settings.access_log_polls,
                           routes=app.router.routes)
    app.add_middleware(ResponseHeadersMiddleware)
    return app
