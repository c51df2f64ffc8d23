"""`/consents`: a caller's face-media consent attestations, and revoking them (SPEC §5).

Venice has no such API (revocation is in its web app's Settings); this is vidgate's own (SPEC §5 GUESS).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from vidgate.api.auth import authenticate
from vidgate.api.context import AppContext
from vidgate.api.http import API_PREFIX, JSONResponse
from vidgate.consent import list_attestations, revoke_attestation
from vidgate.errors import NotFound


def ctx_of(request: Request) -> AppContext:
    return request.app.state.ctx


async def list_consents(request: Request) -> JSONResponse:
    """The caller's unrevoked attestations, oldest first."""
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    data = await ctx.db.read(lambda conn: list_attestations(conn, principal.account_id))
    return JSONResponse({"data": data})


async def revoke_consent(request: Request) -> JSONResponse:
    """Revoke one of the caller's attestations: the next request with those bytes asks for consent again.
    Another account's id, an unknown id or one already revoked is 404."""
    ctx = ctx_of(request)
    principal = await authenticate(ctx, request, "retrieve")
    consent_id = request.path_params["consent_id"]
    revoked = await ctx.db.write(lambda conn: revoke_attestation(conn, principal.account_id, consent_id))
    if not revoked:
        raise NotFound("Consent not found.")
    return JSONResponse({"success": True})


routes: list[Route] = [
    Route(f"{API_PREFIX}/consents", list_consents, methods=["GET"]),
    Route(f"{API_PREFIX}/consents/{{consent_id}}", revoke_consent, methods=["DELETE"]),
]
