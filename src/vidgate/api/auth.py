"""Who is calling: a Sign-In-With-X wallet, a Bearer API key, or nobody (the x402 402) (SPEC §7; X402.md §2.6).

Order on routes that accept both: a payment header is refused (400); a `SIGN-IN-WITH-X` (or legacy
`X-Sign-In-With-X`) header wins over `Authorization`; no credentials at all get the x402 discovery 402.

A wallet sign-in, in order: verify the header (401 `X402_SIGN_IN_*`), consume its nonce in the database (so
every API process sharing it agrees; consumed as soon as the signature verifies, even if the request then
fails), find or create the wallet's account, apply the rate limit, require the minimum credit (402 with the
balance document), and hold one of the wallet's in-flight slots until the response ends (429).

Balance headers (SPEC §1 "Response headers": `x-venice-balance-usd` and `x-venice-balance-diem`, the balance
*before* the request, on authenticated requests) go on every response to a request with a valid credential, from
the balance read together with that credential (no second query): `authenticate` on the wallet-capable routes,
`authenticate_wallet_owner` on `/x402/balance|transactions`, and `optional_key_owner` on the routes where auth is
optional (`GET /models`, `/video/quote`). Accounts here hold no Diem, so its header is always zero.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from vidgate.accounts.keys import KeyOwner, key_credentials, key_owner, look_up_key_owner
from vidgate.accounts.ledger import format_usd, usd_to_micros
from vidgate.accounts.siwx import SiwxError, SiwxIdentity, normalize_wallet, verify_siwx
from vidgate.accounts.wallets import (
    WalletAccount,
    enter_wallet_request,
    leave_wallet_request,
    record_challenge,
    sign_in,
)
from vidgate.accounts.x402 import discovery_body, payment_accepts, payment_required_header, siwx_challenge
from vidgate.api.context import AppContext
from vidgate.api.http import add_headers, on_response_end
from vidgate.api.ratelimit import RateLimitStorageDown
from vidgate.db import SqliteDatabase
from vidgate.errors import (
    AuthenticationFailed,
    BadRequest,
    Forbidden,
    PaymentRequired,
    RateLimited,
    ServiceUnavailable,
    VidgateError,
)
from vidgate.settings import Settings

log = logging.getLogger("vidgate.auth")

PAYMENT_HEADERS = frozenset({b"payment-signature", b"x-payment", b"x-402-payment"})
SIWX_HEADERS = ("sign-in-with-x", "x-sign-in-with-x")  # canonical first; Starlette headers ignore case
NONCE_REUSED_MESSAGE = "This sign-in nonce was already used; sign a new message for every request"
X402_ROUTE_SIGN_IN_MESSAGE = "Invalid Sign-in-with-x signature"  # SK-AUTH: the /x402/* routes' 401 text
RATE_LIMIT_DOWN_RETRY_AFTER_S = 5
# A wallet's request slot is freed when its response ends; this long after, should its API node have died.
WALLET_REQUEST_TTL_SECONDS = 600.0  # a Redis restart or failover usually takes seconds


# (key id, HMAC of the secret) -> the key's owner, or None: see `accounts.keys.look_up_key_owner`.
KeyLookup = Callable[[str, str], Awaitable[KeyOwner | None]]


@dataclass(frozen=True)
class Principal:
    account_id: str
    balance_micros: int
    wallet: str | None = None  # set for Sign-In-With-X callers


def public_base(ctx: AppContext, request: Request) -> str:
    """The server's public base URL: `public_base_url` if set, else the scheme and host the request came to."""
    return ctx.settings.public_base_url or str(request.base_url)


def resource_url(ctx: AppContext, request: Request) -> str:
    return public_base(ctx, request).rstrip("/") + request.url.path


def balance_headers(balance_micros: int) -> dict[str, str]:
    return {"x-venice-balance-usd": format_usd(balance_micros), "x-venice-balance-diem": format_usd(0)}


class PaymentHeaderNotAccepted(BadRequest):
    code = "PAYMENT_HEADER_NOT_ACCEPTED"

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class SignInFailed(AuthenticationFailed):
    """401 `{"error": ..., "code": "X402_SIGN_IN_*"}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class WalletConcurrencyLimited(RateLimited):
    code = "X402_CONCURRENCY_LIMIT"

    def __init__(self) -> None:
        VidgateError.__init__(self, "Too many concurrent requests")

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class WalletMismatch(Forbidden):
    code = "X402_WALLET_MISMATCH"

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


def siwx_header(request: Request) -> str | None:
    for name in SIWX_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            return value
    return None


def _number(value: float) -> float | int:
    """10.0 -> 10, as Venice writes whole dollar amounts."""
    return int(value) if float(value).is_integer() else value


async def issue_challenge_nonce(ctx: AppContext) -> str:
    """A fresh nonce for a 402's SIWX challenge, recorded as issued by this server."""
    nonce = secrets.token_hex(16)
    now = time.time()
    await ctx.db.write(lambda conn: record_challenge(conn, nonce, now, ctx.settings.siwx_nonce_ttl_seconds))
    return nonce


async def discovery_required(ctx: AppContext, request: Request, *, priced: bool = True) -> PaymentRequired:
    """402 kind 1 (no credentials): the x402 discovery body and `PAYMENT-REQUIRED`. `priced=False` gives the
    empty `accepts` of the `/x402/balance` and `/x402/transactions` routes."""
    body = discovery_body(ctx.settings, resource_url(ctx, request), await issue_challenge_nonce(ctx))
    if not priced:
        body["accepts"] = []
    return PaymentRequired(body, headers={"PAYMENT-REQUIRED": payment_required_header(body)})


def insufficient_credit_body(settings: Settings, resource: str, balance_micros: int, nonce: str) -> dict[str, Any]:
    """402 kind 2: the balance document for a signed-in wallet below the minimum credit (SPEC §7; OAS
    X402InferencePaymentRequired, second branch).

    Wire note: this body must carry `error` (the branch requires it), and the OpenAPI file makes the 402 body
    `oneOf: [StandardError, X402InferencePaymentRequired]`; StandardError accepts any object with a string
    `error`, so this body matches both branches and no body of this kind can satisfy that `oneOf`. Venice sends
    exactly this document, so we do too; the tests check it against the X402InferencePaymentRequired schema
    itself (tests/test_siwx.py) and assert the ambiguity explicitly rather than weakening the contract test.
    """
    return {
        "error": "Payment required",
        "code": "PAYMENT_REQUIRED",
        "reason": "insufficient_balance",
        "message": "Insufficient x402 balance",
        "currentBalanceUsd": balance_micros / 1_000_000,
        "minimumBalanceUsd": _number(settings.x402_minimum_balance_usd),
        "description": "Venice API",
        "suggestedTopUpUsd": _number(settings.x402_suggested_top_up_usd),
        "minimumTopUpUsd": _number(settings.x402_min_top_up_usd),
        "supportedTokens": ["USDC"],
        "supportedChains": ["base", "solana"],
        "topUpInstructions": {
            "step1": "POST /api/v1/x402/top-up with no payment header to get payment requirements",
            "step2": "Choose a payment option from accepts and sign a USDC transfer authorization using the x402 "
                     "SDK (createPaymentHeader)",
            "step3": "POST /api/v1/x402/top-up with the signed PAYMENT-SIGNATURE header",
            "receiverWallet": settings.x402_pay_to,
            "tokenAddress": settings.x402_usdc_base,
            "tokenDecimals": 6,
            "network": settings.x402_network,
            "minimumAmountUsd": _number(settings.x402_min_top_up_usd),
        },
        "siwxChallenge": siwx_challenge(settings, resource, nonce),
    }


async def insufficient_credit(ctx: AppContext, request: Request, balance_micros: int) -> PaymentRequired:
    settings = ctx.settings
    resource = resource_url(ctx, request)
    body = insufficient_credit_body(settings, resource, balance_micros, await issue_challenge_nonce(ctx))
    protocol = {
        "x402Version": 2,
        "resource": {"url": resource, "description": "Venice API", "mimeType": "application/json"},
        "accepts": payment_accepts(settings, settings.x402_suggested_top_up_usd),
        "extensions": {"sign-in-with-x": body["siwxChallenge"]},
    }
    return PaymentRequired(body, headers={"PAYMENT-REQUIRED": payment_required_header(protocol, "Payment required")})


async def sign_in_wallet(ctx: AppContext, request: Request, value: str) -> tuple[SiwxIdentity, WalletAccount]:
    """Verify a SIWX header (its URI must be on this server's origin, see accounts/siwx.py) and consume its
    nonce; the wallet's account (created on first sign-in). Raises SignInFailed (401)."""
    try:
        identity = await verify_siwx(value, ctx.settings, server_origin=public_base(ctx, request))
    except SiwxError as exc:
        raise SignInFailed(exc.code, exc.message) from None
    now, ttl = time.time(), ctx.settings.siwx_nonce_ttl_seconds
    account = await ctx.db.write(lambda conn: sign_in(conn, identity.address, identity.nonce, now, ttl))
    if account is None:
        raise SignInFailed("X402_SIGN_IN_NONCE_REUSED", NONCE_REUSED_MESSAGE)
    return identity, account


async def apply_rate_limit(
    ctx: AppContext, request: Request, account_id: str, balance_micros: int, bucket: str
) -> None:
    try:
        decision = await ctx.limiter.hit(account_id, bucket)
    except RateLimitStorageDown:
        # The shared counter (Redis) is down: refuse for now rather than serve uncounted or fail with a 500.
        add_headers(request, balance_headers(balance_micros))
        raise ServiceUnavailable("Rate limiting is temporarily unavailable; please retry shortly",
                                 headers={"Retry-After": str(RATE_LIMIT_DOWN_RETRY_AFTER_S)}) from None
    add_headers(request, {**balance_headers(balance_micros), **decision.headers()})
    if not decision.allowed:
        raise RateLimited(headers={"Retry-After": str(max(1, decision.reset_ms // 1000 - int(time.time())))})


async def leave_wallet(ctx: AppContext, slot: str) -> None:
    try:
        await ctx.db.write(lambda conn: leave_wallet_request(conn, slot))
    except Exception:  # the slot expires by itself (WALLET_REQUEST_TTL_SECONDS); the response is already sent
        log.warning("could not release a wallet request slot; it expires on its own", exc_info=True)


async def authenticate_wallet(ctx: AppContext, request: Request, bucket: str, value: str) -> Principal:
    identity, account = await sign_in_wallet(ctx, request, value)
    await apply_rate_limit(ctx, request, account.account_id, account.balance_micros, bucket)
    settings = ctx.settings
    if account.balance_micros < usd_to_micros(settings.x402_minimum_balance_usd):
        raise await insufficient_credit(ctx, request, account.balance_micros)
    limit = settings.x402_concurrency_limit
    if limit > 0:
        wallet = identity.address
        slot = await ctx.db.write(
            lambda conn: enter_wallet_request(conn, wallet, limit, time.time(), WALLET_REQUEST_TTL_SECONDS))
        if slot is None:
            raise WalletConcurrencyLimited()
        on_response_end(request, lambda: leave_wallet(ctx, slot))
    return Principal(account.account_id, account.balance_micros, wallet=identity.address)


async def authenticate(ctx: AppContext, request: Request, bucket: str, *, cached: bool = False,
                       key_lookup: KeyLookup | None = None) -> Principal:
    """Resolve the caller, apply its rate limit, and set the balance and rate-limit headers.

    `cached`: a Bearer key may come from the SQLite poll cache (`bearer_key_owner`); the caller refreshed it in
    this request. `key_lookup`: how a Bearer key's owner is read instead of `look_up_key_owner` (a route that
    reads more in the same statement)."""
    # One pass over the raw headers (ASGI names are lower-case bytes) instead of a set and three Headers
    # lookups, each a scan of its own: this runs on every poll. The first of repeated headers counts, as in
    # Starlette's Headers.get.
    authorization = siwx = legacy_siwx = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            authorization = value if authorization is None else authorization
        elif name in PAYMENT_HEADERS:
            raise PaymentHeaderNotAccepted(
                "Payment headers are only accepted on POST /api/v1/x402/top-up; sign in with SIGN-IN-WITH-X "
                "instead."
            )
        elif name == b"sign-in-with-x":
            siwx = value if siwx is None else siwx
        elif name == b"x-sign-in-with-x":
            legacy_siwx = value if legacy_siwx is None else legacy_siwx
    siwx = siwx if siwx is not None else legacy_siwx  # the canonical name wins (SIWX_HEADERS)
    if siwx is not None:
        return await authenticate_wallet(ctx, request, bucket, siwx.decode("latin-1"))
    if not authorization:
        raise await discovery_required(ctx, request)
    owner = await bearer_key_owner(ctx, authorization.decode("latin-1"), cached=cached, key_lookup=key_lookup)
    if owner is None:
        raise AuthenticationFailed()
    await apply_rate_limit(ctx, request, owner.account_id, owner.balance_micros, bucket)
    return Principal(owner.account_id, owner.balance_micros)


async def bearer_key_owner(ctx: AppContext, authorization: str, *, cached: bool = False,
                           key_lookup: KeyLookup | None = None) -> KeyOwner | None:
    """The owner (and balance, in the same query) of the key in an `Authorization: Bearer` value; None for
    another scheme, an empty key, or a key that is unknown or revoked.

    `cached` (SQLite; `db.refresh_row_cache()` called earlier in this request): a valid key's owner is kept in
    the process's poll cache under (key id, HMAC of the secret), never the key itself, so the HMAC is computed
    on every request as before and only a key that once matched its stored HMAC can hit. Any commit (a
    revocation, a charge, a top-up) empties the cache before the next request reads it."""
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    key_id, digest = key_credentials(key, ctx.settings.resolved_secret_key)
    db = ctx.db
    if cached and isinstance(db, SqliteDatabase):
        return db.read_cached(("api_key", key_id, digest), lambda conn: key_owner(conn, key_id, digest))
    return await (key_lookup or functools.partial(look_up_key_owner, db))(key_id, digest)


async def optional_key_owner(ctx: AppContext, request: Request) -> KeyOwner | None:
    """For routes where auth is optional (`GET /models`: OAS `security: [{}, BearerAuth]`; `/video/quote`: no
    security): a valid Bearer key gets the balance headers; nothing else changes the answer.

    - No `Authorization` header: anonymous, no header.
    - An invalid key (unknown, revoked, not Bearer): also answered as anonymous, no balance header, never
      401/402. SPEC documents 401 for a bad key only on routes that need one, and nothing for these routes;
      the operation explicitly allows no auth, so we keep it usable rather than guess a 401.
    - A `SIGN-IN-WITH-X` header is ignored here: these are not wallet routes (Venice ignores SIWX on routes
      that do not list it, X402.md §2.6), and verifying it would burn the caller's single-use nonce.
    No rate limit is applied (Venice documents limits for queue and retrieve only).
    """
    authorization = request.headers.get("authorization")
    if not authorization:
        return None
    owner = await bearer_key_owner(ctx, authorization)
    if owner is not None:
        add_headers(request, balance_headers(owner.balance_micros))
    return owner


async def authenticate_wallet_owner(ctx: AppContext, request: Request, wallet: str, what: str) -> WalletAccount:
    """For `/x402/balance/{wallet}` and `/x402/transactions/{wallet}`: the SIWX signer must be `wallet`.

    No SIWX header: 402 discovery with empty `accepts`. A bad header: 401 with Venice's text for these routes
    ("Invalid Sign-in-with-x signature") and the specific `X402_SIGN_IN_*` code. Another wallet: 403.
    """
    value = siwx_header(request)
    if value is None:
        raise await discovery_required(ctx, request, priced=False)
    try:
        identity, account = await sign_in_wallet(ctx, request, value)
    except SignInFailed as exc:
        raise SignInFailed(exc.code, X402_ROUTE_SIGN_IN_MESSAGE) from None
    add_headers(request, balance_headers(account.balance_micros))
    if normalize_wallet(wallet) != identity.address:
        raise WalletMismatch(f"You can only access {what} for your own wallet")
    return account
