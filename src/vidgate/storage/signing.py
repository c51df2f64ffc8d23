"""Signed, expiring download URLs for private models: `/api/v1/video/download/<queue_id>.<expires>.<sig>`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


class InvalidToken(Exception):
    """The token was tampered with or malformed (403)."""


class ExpiredToken(Exception):
    """The token's signature is good but its time is up (410)."""


@dataclass(frozen=True)
class DeliveryUrlSigner:
    secret: str
    ttl_seconds: int = 24 * 3600

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self.secret.encode(), b"download:" + payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, queue_id: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl_seconds)
        payload = f"{queue_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: float | None = None) -> str:
        """The queue_id the token grants; raises InvalidToken or ExpiredToken."""
        queue_id, _, rest = token.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not queue_id or not expires_text.isdigit() or not signature:
            raise InvalidToken(token)
        if not hmac.compare_digest(self._sign(f"{queue_id}.{expires_text}"), signature):
            raise InvalidToken(token)
        if int(expires_text) < (now if now is not None else time.time()):
            raise ExpiredToken(token)
        return queue_id
