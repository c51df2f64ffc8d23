"""The `/x402/*` routes: top-up, wallet balance and transactions (X402.md)."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
