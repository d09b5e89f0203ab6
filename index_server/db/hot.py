"""Queries on the serving hot path, run straight on a pooled DBAPI connection.

A project page costs one indexed lookup. Through SQLAlchemy's Core execution path, with a
transaction around it, that lookup cost more CPU than the rest of the request; here the
statement is compiled once per engine and run without BEGIN/COMMIT (a single SELECT is
consistent on its own).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.sql import Select


class HotQuery:
    """A SELECT compiled once for an engine's dialect, run on a raw pooled connection."""

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.engine = engine
        self.sql = str(compiled)
        self.positional = compiled.positiontup  # None for named paramstyles
        self.compiled = compiled

    def _params(self, values: dict[str, Any]) -> Any:
        params = self.compiled.construct_params(values)
        if self.positional is not None:
            return tuple(params[name] for name in self.positional)
        return params

    def all(self, **values: Any) -> list[tuple[Any, ...]]:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, self._params(values))
                rows = cursor.fetchall()
            finally:
                cursor.close()
            if self.engine.dialect.name != "sqlite":
                connection.rollback()  # end the implicit read transaction at once
        finally:
            connection.close()  # back to the pool
        return [tuple(row) for row in rows]

    def first(self, **values: Any) -> tuple[Any, ...] | None:
        rows = self.all(**values)
        return rows[0] if rows else None
