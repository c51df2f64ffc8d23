"""Standard Webhooks signatures, made by the `standardwebhooks` library (the spec's reference implementation).

Every message carries `webhook-id` (the delivery's id, the same on every retry, so receivers can drop duplicates),
`webhook-timestamp` (when this attempt was signed: receivers refuse ones more than 5 minutes off, which stops
replays) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # 192 bits; the spec asks for 24 to 64


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signed_headers(secret: str, message_id: str, body: str, now: float) -> dict[str, str]:
    """The headers of one attempt to send `body`, signed as of `now`."""
    timestamp = int(now)
    signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(timestamp, UTC), body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
