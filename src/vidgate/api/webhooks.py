"""The account's webhooks (vidgate extensions, README "Webhooks"):

    GET  /api/v1/webhooks                               the endpoint URL (or null) and the signing secret
    PUT  /api/v1/webhooks                               {"url": "https://..."} sets or replaces it; null removes it
    POST /api/v1/webhooks/rotate-secret                 a new signing secret, used from the next attempt on
    GET  /api/v1/webhooks/deliveries                    the delivery log, newest first, with every attempt (cursor)
    POST /api/v1/webhooks/deliveries/{id}/redeliver     send that delivery again now

Authenticated as the job routes are; another account's delivery is 404, as an unknown one. Per-job targets are
the queue body's `webhook_url`; both are signed with the account's secret.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.routing import Route

from vidgate.api.auth import authenticate
from vidgate.api.http import API_PREFIX, JSONResponse, read_json_object
from vidgate.api.jobs import cursor_param, page_size
from vidgate.api.video import ctx_of
from vidgate.errors import Conflict, NotFound, invalid
from vidgate.webhooks import outbox
from vidgate.webhooks.deliveries import DeliveryInFlight, list_deliveries, redeliver
from vidgate.webhooks.endpoints import endpoint_of, ensure_endpoint, rotate_secret, set_url
from vidgate.webhooks.targets import vetted_target


async def get_endpoint(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    account_id = principal.account_id
    # A read, and a write only the first time (the secret is made on first need).
    endpoint = (await ctx.db.read(lambda conn: endpoint_of(conn, account_id))
                or await ctx.db.write(lambda conn: ensure_endpoint(conn, account_id)))
    return JSONResponse(endpoint.view())


async def put_endpoint(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "queue")
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    if "url" not in body:
        raise invalid("url", "Required: an https URL, or null to remove the endpoint", code="invalid_type",
                      expected="string | null", received="undefined")
    url = await vetted_target(ctx.fetcher, body["url"], field="url")
    endpoint = await ctx.db.write(lambda conn: set_url(conn, principal.account_id, url))
    return JSONResponse(endpoint.view())


async def rotate(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "queue")
    endpoint = await ctx.db.write(lambda conn: rotate_secret(conn, principal.account_id))
    return JSONResponse(endpoint.view())


async def deliveries(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    limit = page_size(request.query_params.get("limit"))
    cursor = cursor_param(request.query_params.get("cursor"))
    found, next_cursor = await ctx.db.read(
        lambda conn: list_deliveries(conn, principal.account_id, limit=limit, cursor=cursor))
    return JSONResponse({"data": found, "has_more": next_cursor is not None, "next_cursor": next_cursor})


async def redeliver_one(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "queue")
    delivery_id = request.path_params["delivery_id"]
    try:
        view = await ctx.db.write(lambda conn: redeliver(conn, principal.account_id, delivery_id, time.time()))
    except DeliveryInFlight:
        raise Conflict("An attempt to deliver it is under way; its outcome is in the log shortly",
                       code="DELIVERY_IN_FLIGHT") from None
    if view is None:
        raise NotFound("No such webhook delivery")
    outbox.announce()  # committed: this process's dispatcher sends it now
    return JSONResponse(view, status_code=202)


routes = [
    Route(f"{API_PREFIX}/webhooks", get_endpoint, methods=["GET"]),
    Route(f"{API_PREFIX}/webhooks", put_endpoint, methods=["PUT"]),
    Route(f"{API_PREFIX}/webhooks/rotate-secret", rotate, methods=["POST"]),
    Route(f"{API_PREFIX}/webhooks/deliveries", deliveries, methods=["GET"]),
    Route(f"{API_PREFIX}/webhooks/deliveries/{{delivery_id}}/redeliver", redeliver_one, methods=["POST"]),
]
