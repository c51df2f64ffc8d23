"""An account's webhook endpoint: the URL every job event of the account goes to (or none), and the secret that
signs all of the account's webhooks, its per-job `webhook_url`s included. The secret is made on first need: the
first `GET /webhooks`, or the first delivery, whichever comes first; every API node agrees on it (the primary key
decides a race)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from vidgate.db import webhook_endpoints
from vidgate.webhooks.signing import new_secret


@dataclass(frozen=True)
class Endpoint:
    url: str | None
    secret: str

    def view(self) -> dict[str, str | None]:
        return {"url": self.url, "secret": self.secret}


def endpoint_of(conn: Connection, account_id: str) -> Endpoint | None:
    row = conn.execute(select(webhook_endpoints.c.url, webhook_endpoints.c.secret)
                       .where(webhook_endpoints.c.account_id == account_id)).first()
    return Endpoint(row.url, row.secret) if row else None


def ensure_endpoint(conn: Connection, account_id: str) -> Endpoint:
    """The account's endpoint, made (no URL, a new secret) if it has none. Inside a write transaction."""
    found = endpoint_of(conn, account_id)
    if found is not None:
        return found
    secret = new_secret()
    savepoint = conn.begin_nested()  # a lost race must not abort the caller's transaction (PostgreSQL)
    try:
        conn.execute(insert(webhook_endpoints).values(account_id=account_id, url=None, secret=secret,
                                                      created_at=time.time()))
    except IntegrityError:
        savepoint.rollback()
        winner = endpoint_of(conn, account_id)
        assert winner is not None
        return winner
    savepoint.commit()
    return Endpoint(None, secret)


def secrets_of(conn: Connection, account_ids: set[str]) -> dict[str, str]:
    """The signing secret of each account, made for those that have none yet."""
    rows = conn.execute(select(webhook_endpoints.c.account_id, webhook_endpoints.c.secret)
                        .where(webhook_endpoints.c.account_id.in_(sorted(account_ids)))).all()
    found = {row.account_id: row.secret for row in rows}
    for account_id in account_ids - found.keys():
        found[account_id] = ensure_endpoint(conn, account_id).secret
    return found


def set_url(conn: Connection, account_id: str, url: str | None) -> Endpoint:
    """Set or replace (None: remove) the URL; the secret stays, since per-job URLs are signed with it too."""
    secret = ensure_endpoint(conn, account_id).secret
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id).values(url=url))
    return Endpoint(url, secret)


def rotate_secret(conn: Connection, account_id: str) -> Endpoint:
    """A new secret, used for every attempt from now on (deliveries are signed when sent, retries included)."""
    endpoint = ensure_endpoint(conn, account_id)
    secret = new_secret()
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.account_id == account_id)
                 .values(secret=secret))
    return Endpoint(endpoint.url, secret)
