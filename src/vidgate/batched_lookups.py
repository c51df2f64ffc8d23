"""PostgreSQL: the lookups that arrive together on one event loop, run as one statement.

Every poll reads its API key and its job (`PostgresDatabase.lookup`). One statement per poll costs a round trip,
psycopg's work on both ends of it, and PostgreSQL's own per-statement work, which under load is most of a poll's
CPU (bench/RESULTS.md). So the lookups of one prepared query are grouped: while one group's statement is out, the
lookups that arrive wait, and go together in the next one, a single
`SELECT ... FROM unnest(<each parameter as an array>) WITH ORDINALITY CROSS JOIN LATERAL (<the query>)`.
A quiet server sends each lookup at once (the next turn of the event loop), as the plain statement (PostgreSQL
runs the batch form of one lookup ~0.3 ms slower: a poll's p50 0.8 against 1.2 ms); a busy one sends fewer,
larger groups.

A group's statement starts after every lookup in it was asked for, so each still sees everything committed before
its request arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import NullType, String

from vidgate.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import SQLCompiler

Row = Sequence[Any]
RunStatement = Callable[[str, dict[str, Any]], Awaitable[list[Row]]]

# Names the query's own SQL never uses (its tables and aliases are the schema's).
_BATCH = "vidgate_batch"
_ORDINAL = "vidgate_n"


def batch_sql(compiled: SQLCompiler) -> tuple[str, list[str]]:
    """The batch form of a compiled single-row SELECT, and its parameter names (each bound to a list: one value
    per lookup). Its rows are `(ordinal, *the query's columns)`, ordinals counting the lookups from 1; a lookup
    with no row has none."""
    binds: dict[str, BindParameter[Any]] = compiled.binds
    names = list(binds)
    inner = str(compiled)
    arrays = []
    for name in names:
        inner = inner.replace(f"%({name})s", f"{_BATCH}.{name}")
        bind_type = binds[name].type
        # Never a length: a cast to VARCHAR(40) would cut a longer value to one that matches a real row.
        text = isinstance(bind_type, (String, NullType))
        sql_type = "TEXT" if text else bind_type.compile(dialect=compiled.dialect)
        arrays.append(f"CAST(%({name})s AS {sql_type}[])")
    columns = ", ".join([*names, _ORDINAL])
    sql = (f"SELECT {_BATCH}.{_ORDINAL}, vidgate_row.* FROM unnest({', '.join(arrays)}) WITH ORDINALITY "
           f"AS {_BATCH}({columns}) CROSS JOIN LATERAL ({inner}) AS vidgate_row")
    return sql, names


class LookupBatcher:
    """The lookups of one prepared query on one event loop: at most one statement out at a time, the lookups
    that arrive meanwhile sent together when it returns."""

    def __init__(self, sql: str, names: list[str], run: RunStatement, single_sql: str = "") -> None:
        self.sql = sql
        self.single_sql = single_sql
        self.names = names
        self.run = run
        self.waiting: list[tuple[dict[str, Any], asyncio.Future[Row | None]]] = []
        self.sender: asyncio.Task[None] | None = None

    async def lookup(self, params: dict[str, Any]) -> Row | None:
        """The query's first row for `params` (its columns in order), or None."""
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        self.waiting.append((params, future))
        if self.sender is None:
            # A task of its own: a request that is canceled (its client went away) must not cancel the others'.
            self.sender = asyncio.get_running_loop().create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        try:
            while self.waiting:
                group, self.waiting = self.waiting, []
                await self._send(group)
        finally:
            self.sender = None
            for _, future in self.waiting:  # only when this task itself was canceled (the loop is closing)
                future.cancel()

    async def _send(self, group: list[tuple[dict[str, Any], asyncio.Future[Row | None]]]) -> None:
        group = [(params, future) for params, future in group if not future.done()]
        if not group:
            return
        try:
            if len(group) == 1 and self.single_sql:  # alone: the plain statement, which PostgreSQL runs faster
                rows = [(1, *row) for row in await self.run(self.single_sql, group[0][0])]
            else:
                rows = await self.run(self.sql, {name: [params[name] for params, _ in group]
                                                 for name in self.names})
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            if len(group) > 1 and not isinstance(exc, DatabaseUnavailable):
                # One lookup's bad value (a NUL in a string, say) must not fail the others: each on its own.
                for one in group:
                    await self._send([one])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        first: dict[int, Row] = {}
        for row in rows:
            first.setdefault(row[0], row[1:])
        for ordinal, (_, future) in enumerate(group, 1):
            if not future.done():
                future.set_result(first.get(ordinal))
