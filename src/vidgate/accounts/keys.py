"""API keys: `vg_<key id>_<secret>`. Only an HMAC of the secret is stored, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidgate.db import api_keys

KEY_PREFIX = "vg"


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    account_id: str
    label: str
    created_at: float
    revoked_at: float | None


def hash_secret(secret: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """`vg_<id>_<secret>` -> (id, secret); None for anything else."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create_api_key(conn: AsyncConnection, account_id: str, pepper: str, label: str = "") -> tuple[str, str]:
    """Store a new key for the account; returns (key id, the full key). The key is shown only here."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "").replace("-", "")
    await conn.execute(
        insert(api_keys).values(
            id=key_id, account_id=account_id, secret_hash=hash_secret(secret, pepper),
            label=label, created_at=time.time(), revoked_at=None,
        )
    )
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"


async def authenticate_key(conn: AsyncConnection, key: str, pepper: str) -> str | None:
    """The account id for a valid, unrevoked key, else None."""
    parts = split_key(key)
    if parts is None:
        # Still hash something so a malformed key costs the same as a wrong one.
        hmac.compare_digest(hash_secret(key, pepper), "0" * 64)
        return None
    key_id, secret = parts
    row = (
        await conn.execute(
            select(api_keys.c.account_id, api_keys.c.secret_hash, api_keys.c.revoked_at).where(
                api_keys.c.id == key_id
            )
        )
    ).first()
    expected = row.secret_hash if row is not None else "0" * 64
    ok = hmac.compare_digest(hash_secret(secret, pepper), expected)
    if row is None or not ok or row.revoked_at is not None:
        return None
    return row.account_id


async def list_api_keys(conn: AsyncConnection) -> list[ApiKeyRecord]:
    rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
    return [ApiKeyRecord(r.id, r.account_id, r.label, r.created_at, r.revoked_at) for r in rows]


async def revoke_api_key(conn: AsyncConnection, key_id: str) -> bool:
    result = await conn.execute(
        update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(
            revoked_at=time.time()
        )
    )
    return result.rowcount == 1
