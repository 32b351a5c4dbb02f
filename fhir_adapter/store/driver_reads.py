"""PostgreSQL reads run by asyncpg itself, past SQLAlchemy's execution and result layers.

Issue #18: a page of 50 cost the store 0.725 ms of CPU through SQLAlchemy and 0.492 ms with
asyncpg running the same SQL (benchmarks/store_reads.py, docs/performance.md). A read-only
transaction's SELECT is compiled once for the engine's dialect (the same text SQLAlchemy sends,
with its casts) and run by the driver, whose rows (asyncpg Records) unpack and index by position
like SQLAlchemy's Rows. Writes and SQLite keep SQLAlchemy; so does a statement that needs
SQLAlchemy at execution: binds that expand (IN lists) or columns whose values it converts.
(JSON columns need nothing: SQLAlchemy gives each asyncpg connection the codecs that decode
them.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

_NO_VALUE = object()


class DriverStatement:
    """A SELECT compiled for asyncpg: its SQL text, and how each `$n` takes its value."""

    __slots__ = ("binds", "sql")

    def __init__(self, sql: str, binds: Sequence[tuple[str, Any, Any]]) -> None:
        self.sql = sql
        self.binds = tuple(binds)  # (name, value when none is given, bind processor)

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments of the SQL for the statement's named `values`."""
        arguments = []
        for name, default, process in self.binds:
            value = values.get(name, default)
            if value is _NO_VALUE:
                raise KeyError(f"the statement's bind {name!r} has no value")
            arguments.append(value if process is None else process(value))
        return arguments


def compile_for_driver(statement: Any, dialect: Dialect) -> DriverStatement | None:
    """`statement` compiled for asyncpg, or None when SQLAlchemy must run it."""
    if not isinstance(statement, Select):
        return None
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        return None  # expanding binds: rendered per execution
    for column in statement.selected_columns:
        try:
            converts = dialect.type_descriptor(column.type).result_processor(dialect, None)
        except Exception:  # its conversion depends on the driver's type code: SQLAlchemy's
            return None
        if converts is not None:
            return None  # SQLAlchemy converts this column's values
    binds = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None:
            return None
        default = _NO_VALUE if bind.required else bind.value
        binds.append((name, default, dialect.type_descriptor(bind.type).bind_processor(dialect)))
    return DriverStatement(str(compiled), binds)


class DriverStatements:
    """The statements compiled for one dialect, each compiled once.

    Keyed by the statement object: the store builds its statements once (module constants and
    each search shape's, store/search_sql.py) and runs them again and again. Each entry keeps
    its statement, so no other statement can take its id while it is here; the entries are
    dropped together when there are `KEPT` of them.
    """

    KEPT = 4096

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._compiled: dict[int, tuple[Any, DriverStatement | None]] = {}

    def get(self, statement: Any) -> DriverStatement | None:
        entry = self._compiled.get(id(statement))
        if entry is not None and entry[0] is statement:
            return entry[1]
        compiled = compile_for_driver(statement, self.dialect)
        if len(self._compiled) >= self.KEPT:
            self._compiled.clear()
        self._compiled[id(statement)] = (statement, compiled)
        return compiled
