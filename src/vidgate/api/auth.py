"""Who is calling: a Bearer API key, else the x402 402 for a request with no credentials (SPEC §7)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import Request

from vidgate.accounts.keys import authenticate_key
from vidgate.accounts.ledger import format_usd
from vidgate.accounts.x402 import discovery_body, payment_required_header
from vidgate.api.context import AppContext
from vidgate.api.http import add_headers
from vidgate.errors import AuthenticationFailed, BadRequest, PaymentRequired, RateLimited

PAYMENT_HEADERS = frozenset({b"payment-signature", b"x-payment", b"x-402-payment"})
SIWX_HEADERS = frozenset({b"sign-in-with-x", b"x-sign-in-with-x"})


@dataclass(frozen=True)
class Principal:
    account_id: str
    balance_micros: int


def resource_url(ctx: AppContext, request: Request) -> str:
    base = ctx.settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + request.url.path


class PaymentHeaderNotAccepted(BadRequest):
    code = "PAYMENT_HEADER_NOT_ACCEPTED"

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


async def authenticate(ctx: AppContext, request: Request, bucket: str) -> Principal:
    """Resolve the caller, apply its rate limit, and set the balance and rate-limit headers."""
    headers = request.headers
    names = {name for name, _ in request.scope["headers"]}  # ASGI header names are lower-case bytes
    if not names.isdisjoint(PAYMENT_HEADERS):
        raise PaymentHeaderNotAccepted(
            "Payment headers are only accepted on POST /api/v1/x402/top-up; sign in with SIGN-IN-WITH-X instead."
        )
    if not names.isdisjoint(SIWX_HEADERS):
        # Wallet sign-in arrives with the x402 work; until then say so plainly rather than pretend.
        raise AuthenticationFailed("Sign-In-With-X wallet authentication is not enabled on this server yet")
    authorization = headers.get("authorization")
    if not authorization:
        body = discovery_body(ctx.settings, resource_url(ctx, request))
        raise PaymentRequired(body, headers={"PAYMENT-REQUIRED": payment_required_header(body)})
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed()
    pepper = ctx.settings.resolved_secret_key
    owner = await ctx.db.read(lambda conn: authenticate_key(conn, key.strip(), pepper))
    if owner is None:
        raise AuthenticationFailed()
    decision = ctx.limiter.hit(owner.account_id, bucket)
    add_headers(request, {"x-venice-balance-usd": format_usd(owner.balance_micros),
                          **decision.headers()})
    if not decision.allowed:
        raise RateLimited(headers={"Retry-After": str(max(1, decision.reset_ms // 1000 - int(time.time())))})
    return Principal(owner.account_id, owner.balance_micros)
