"""The application factory: a Starlette app (the routes parse their own bodies into Venice's error shapes, so
nothing of FastAPI was used but its wrapping, three more middleware layers on every poll)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

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
from vidgate.retention import HistoryPruner
from vidgate.settings import Settings
from vidgate.webhooks.dispatcher import Dispatcher

log = logging.getLogger("vidgate.api")


def create_app(settings: Settings) -> Starlette:
    ctx = AppContext.build(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.db.create_schema()
        sender = Dispatcher(ctx)  # this node's share of the webhook deliveries (webhooks/dispatcher.py)
        sender.start()
        pruner = HistoryPruner(ctx.db, settings.history_retention_days)  # vidgate/retention.py
        pruner.start()
        yield
        await pruner.stop()
        await sender.stop()
        # A top-up whose client stopped waiting is still settling: let it finish and be credited.
        from vidgate.accounts.payments import pending_settlements

        if pending := pending_settlements():
            await asyncio.wait(pending, timeout=ctx.settings.x402_settle_timeout_seconds)
        await ctx.fetcher.aclose()
        await ctx.limiter.aclose()
        await ctx.hub.close()
        await ctx.db.aclose()

    balance_message = insufficient_balance_message(settings.topup_url, venice_texts=settings.venice_texts)

    async def vidgate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VidgateError)
        if isinstance(exc, PaymentRequired) and exc.body().get("code") == "INSUFFICIENT_BALANCE":
            exc = insufficient_balance(balance_message)  # raised by the ledger, which has no settings at hand
        return error_response(request, exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Outside ObserveMiddleware (Starlette runs this handler in its outermost layer): the id is passed here.
        log.exception("unhandled error on %s %s", request.method, request.url.path,
                      extra={"request_id": request.scope.get("state", {}).get("request_id")})
        return error_response(request, InferenceFailed("An unknown error occurred"))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    # /openapi.json and /docs are api/docs.py's, served from the package (no CDN).
    routes: list[BaseRoute] = [*video.routes, *jobs.routes, *events.routes, *delivery.routes, *models.routes,
                               *x402.routes, *consents.routes, *webhooks.routes, *playground.routes,
                               *readyz.routes, *docs.routes, Route("/healthz", healthz, methods=["GET"])]
    request_stats = None
    if settings.metrics_enabled:
        collected = metrics.Metrics(ctx.db, settings.resolved_database_url)
        request_stats = collected.requests
        routes.extend(metrics.routes)
    middleware = [Middleware(ResponseHeadersMiddleware)]
    # Inside ResponseHeadersMiddleware, which makes the request id it logs with.
    if request_stats is not None or settings.access_log:
        middleware.append(Middleware(ObserveMiddleware, stats=request_stats, log_requests=settings.access_log,
                                     log_polls=settings.access_log_polls, routes=routes))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={
        VidgateError: vidgate_error, StarletteHTTPException: http_error, Exception: unexpected_error})
    app.state.ctx = ctx
    if request_stats is not None:
        app.state.metrics = collected
    return app
