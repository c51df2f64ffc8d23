"""Cursor pages, newest first, for every list route (jobs, webhook deliveries): a cursor is the (created_at, id)
of the last row a page showed, opaque to clients; the next page is the rows strictly after it in that order."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import Connection, Select, Table, and_, or_
from sqlalchemy.engine import Row


class BadCursor(ValueError):
    """Not a cursor this API gave out."""


def encode_cursor(created_at: float, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created_at), str(row_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadCursor(cursor) from exc


def newest_first(conn: Connection, query: Select[Any], table: Table, *, limit: int,
                 cursor: tuple[float, str] | None) -> tuple[list[Row[Any]], str | None]:
    """A page of `query` over `table` (which has `created_at` and `id`), newest first after `cursor`; and the
    cursor of the next page, None when this is the last."""
    if cursor is not None:
        created_at, row_id = cursor
        query = query.where(or_(table.c.created_at < created_at,
                                and_(table.c.created_at == created_at, table.c.id < row_id)))
    rows = conn.execute(query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    more = len(rows) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None
