"""Alembic migrations: they build the schema that ``index_server/db/schema.py`` declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect

from index_server.db.migrate import alembic_config, current_revision, upgrade
from index_server.db.schema import metadata


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrations.sqlite3'}"


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str, target: MetaData = metadata) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            found = compare_metadata(context, target)
    finally:
        engine.dispose()
    # Column changes come grouped in lists; flatten, and drop alembic's SQLite false
    # positive on empty-string defaults ('' reflected vs "" declared are the same).
    flat = [d for item in found for d in (item if isinstance(item, list) else [item])]
    return [d for d in flat if not (d[0] == "modify_default" and _same_default(d[5], d[6]))]


def _default_text(clause: Any) -> str | None:
    if clause is None:
        return None
    arg = clause.arg
    text = (arg if isinstance(arg, str) else str(getattr(arg, "text", arg))).strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    return text


def _same_default(reflected: Any, declared: Any) -> bool:
    return _default_text(reflected) == _default_text(declared)


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()


def test_upgrade_empty_database_creates_tables(tmp_path: Path) -> None:
    url = _url(tmp_path)
    assert _tables(url) == set()
    command.upgrade(alembic_config(url), "head")
    assert _tables(url) == set(metadata.tables) | {"alembic_version"}
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    # the index-wide serial row the code relies on exists
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, serial FROM index_state").all() == [(1, 0)]
    finally:
        engine.dispose()


def test_migrations_match_schema(tmp_path: Path) -> None:
    url = _url(tmp_path)
    upgrade(url)
    assert _diff(url) == []


def test_upgrade_is_idempotent_and_downgrade_reverses(tmp_path: Path) -> None:
    url = _url(tmp_path)
    upgrade(url)
    upgrade(url)  # nothing to do the second time
    command.downgrade(alembic_config(url), "base")
    assert _tables(url) <= {"alembic_version"}
    upgrade(url)
    assert _diff(url) == []


def test_comparison_detects_drift(tmp_path: Path) -> None:
    """The check above can fail: a column or a default the migrations lack is reported."""
    url = _url(tmp_path)
    upgrade(url)
    drifted = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    Table("files", drifted, Column("extra", Integer), extend_existing=True)
    Table(
        "tokens",
        drifted,
        Column("name", String(200), nullable=False, server_default="x"),
        extend_existing=True,
    )
    kinds = {d[0] for d in _diff(url, drifted)}
    assert {"add_column", "modify_default"} <= kinds
