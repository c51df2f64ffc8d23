"""The `/x402/*` routes: top-up, wallet balance and transactions (X402.md)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.accounts import payments
from vidgate.accounts.ledger import usd_to_micros
from vidgate.accounts.siwx import normalize_wallet
from vidgate.accounts.wallets import wallet_transactions
from vidgate.api.auth import authenticate_wallet_owner
from vidgate.api.context import AppContext
from vidgate.api.http import API_PREFIX, JSONResponse
from vidgate.errors import invalid

routes: list[Route] = []


def _top_up_resource_url(request: Request, ctx: AppContext) -> str:
    base = ctx.settings.public_base_url
    return f"{base.rstrip('/')}{API_PREFIX}/x402/top-up" if base else str(request.url.replace(query=""))


async def top_up(request: Request) -> Response:
    """`POST /x402/top-up`: 402 payment requirements without a payment header, else settle and credit it.
    The request body is ignored (the OpenAPI file says none is needed)."""
    ctx: AppContext = request.app.state.ctx
    resource_url = _top_up_resource_url(request, ctx)
    header = payments.find_payment_header(request.headers)
    if header is None:
        body, headers = payments.top_up_requirements(ctx.settings, resource_url)
        return JSONResponse(body, status_code=402, headers=headers)
    result = await payments.top_up(ctx.settings, ctx.db, header, resource_url)
    return JSONResponse(result.body, headers=result.headers)


routes.append(Route(f"{API_PREFIX}/x402/top-up", top_up, methods=["POST"]))


# --- wallet balance and transactions (SIWX; the signer must be the wallet in the path) ----------------------

WALLET_ADDRESS = re.compile(r"0x[a-fA-F0-9]{40}|[1-9A-HJ-NP-Za-km-z]{32,44}")  # the OpenAPI path pattern


def _wallet_param(request: Request) -> str:
    wallet = request.path_params["wallet"]
    if not WALLET_ADDRESS.fullmatch(wallet):
        raise invalid("walletAddress", "Expected an EVM (0x...) or Solana (base58) wallet address",
                      code="invalid_string")
    return wallet


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw in ("", "null"):
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit():
        raise invalid(name, "Expected integer", code="invalid_type", expected="integer", received="string")
    value = int(raw)
    if value < low:
        raise invalid(name, f"Number must be greater than or equal to {low}", code="too_small")
    if high is not None and value > high:
        raise invalid(name, f"Number must be less than or equal to {high}", code="too_big")
    return value


async def wallet_balance(request: Request) -> Response:
    """`GET /x402/balance/{wallet}`: the wallet's credit (0 for a wallet that never topped up)."""
    ctx: AppContext = request.app.state.ctx
    wallet = _wallet_param(request)
    account = await authenticate_wallet_owner(ctx, request, wallet, "balance")
    settings = ctx.settings
    return JSONResponse({
        "success": True,
        "data": {
            "walletAddress": normalize_wallet(wallet),
            "balanceUsd": account.balance_micros / 1_000_000,
            "canConsume": account.balance_micros >= usd_to_micros(settings.x402_minimum_balance_usd),
            "minimumTopUpUsd": settings.x402_min_top_up_usd,
            "suggestedTopUpUsd": settings.x402_suggested_top_up_usd,
        },
    })


async def wallet_transaction_history(request: Request) -> Response:
    """`GET /x402/transactions/{wallet}?limit&offset`: the wallet's ledger, newest first (TOP_UP, CHARGE,
    REFUND), with the balance after each entry."""
    ctx: AppContext = request.app.state.ctx
    wallet = _wallet_param(request)
    limit = _int_param(request, "limit", 50, 1, 100)
    offset = _int_param(request, "offset", 0, 0, None)
    account = await authenticate_wallet_owner(ctx, request, wallet, "transaction history")
    page, has_more = await ctx.db.read(lambda conn: wallet_transactions(conn, account.account_id, limit, offset))
    return JSONResponse({
        "success": True,
        "data": {
            "walletAddress": normalize_wallet(wallet),
            "currentBalance": account.balance_micros / 1_000_000,
            "transactions": page,
            "pagination": {"limit": limit, "offset": offset, "hasMore": has_more},
        },
    })


routes.append(Route(f"{API_PREFIX}/x402/balance/{{wallet}}", wallet_balance, methods=["GET"]))
routes.append(Route(f"{API_PREFIX}/x402/transactions/{{wallet}}", wallet_transaction_history, methods=["GET"]))
