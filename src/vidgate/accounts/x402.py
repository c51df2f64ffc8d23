"""x402 discovery: the 402 body a request with no credentials gets (SPEC §7, kind 1)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from vidgate.settings import Settings

SOLANA_MAINNET = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
SIWX_STATEMENT = "Sign in to Venice AI"
SIWX_CHALLENGE_TTL = timedelta(minutes=5)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def siwx_challenge(settings: Settings, resource_url: str, nonce: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "info": {
            "domain": settings.siwx_domain,
            "uri": resource_url,
            "version": "1",
            "nonce": nonce or secrets.token_hex(16),
            "issuedAt": _iso(now),
            "expirationTime": _iso(now + SIWX_CHALLENGE_TTL),
            "statement": SIWX_STATEMENT,
        },
        "supportedChains": [
            {"chainId": settings.x402_network, "type": "eip191"},
            {"chainId": settings.x402_network, "type": "eip1271"},
            {"chainId": SOLANA_MAINNET, "type": "ed25519"},
        ],
    }


def payment_accepts(settings: Settings, amount_usd: float) -> list[dict[str, Any]]:
    amount = str(round(amount_usd * 1_000_000))
    return [
        {
            "scheme": "exact", "network": settings.x402_network, "asset": settings.x402_usdc_base,
            "amount": amount, "payTo": settings.x402_pay_to, "maxTimeoutSeconds": 300,
            "extra": {"name": "USD Coin", "version": "2"},
        },
        {
            "scheme": "exact", "network": "solana", "asset": settings.x402_usdc_solana, "amount": amount,
            "payTo": settings.x402_solana_pay_to, "maxTimeoutSeconds": 300,
            "extra": {"name": "USD Coin", "version": "2", "feePayer": settings.x402_solana_fee_payer},
        },
    ]


def discovery_body(settings: Settings, resource_url: str, nonce: str | None = None) -> dict[str, Any]:
    """The x402 v2 discovery document for an inference route called without credentials.

    No top-level `error` string here: the OpenAPI file makes the 402 body `oneOf` StandardError and this
    document, so a body carrying both would match both branches and be invalid. The `PAYMENT-REQUIRED`
    header (the x402 protocol object) carries the error text instead.
    """
    return {
        "x402Version": 2,
        "resource": {"url": resource_url, "description": "Venice API", "mimeType": "application/json"},
        "accepts": payment_accepts(settings, settings.x402_inference_amount_usd),
        "extensions": {"sign-in-with-x": siwx_challenge(settings, resource_url, nonce)},
        "authOptions": auth_options(settings, resource_url),
    }


def auth_options(settings: Settings, resource_url: str) -> dict[str, Any]:
    """Where a client gets a key and reads the docs: Venice's pages only when the operator asks for Venice's
    texts (VIDGATE_VENICE_TEXTS); else VIDGATE_ACCOUNT_URL for keys, and this server's own /docs."""
    if settings.venice_texts:
        get_key, docs, top_up_docs = ("https://venice.ai/settings/api", "https://docs.venice.ai/api-reference",
                                      "https://docs.venice.ai/api-reference/endpoint/x402/top-up")
    else:
        # The resource is <this server's public base>/api/v1/...: its base, whatever prefix a proxy adds.
        docs = f"{resource_url.partition('/api/v1/')[0]}/docs"
        get_key, top_up_docs = settings.account_url or docs, f"{docs}#/x402/topUpX402Balance"
    return {
        "apiKey": {"header": "Authorization: Bearer YOUR_API_KEY", "getKey": get_key, "docs": docs},
        "x402Wallet": {
            "header": "SIGN-IN-WITH-X",
            "legacyHeader": "X-Sign-In-With-X",
            "topUp": "POST /api/v1/x402/top-up",
            "docs": top_up_docs,
        },
    }


def payment_required_header(body: dict[str, Any], error: str = "Authentication required") -> str:
    """The `PAYMENT-REQUIRED` header: base64 of the x402 object (without the Venice-only authOptions)."""
    protocol = {k: body[k] for k in ("x402Version", "resource", "accepts", "extensions") if k in body}
    protocol["error"] = error
    return base64.b64encode(json.dumps(protocol, separators=(",", ":")).encode()).decode()
