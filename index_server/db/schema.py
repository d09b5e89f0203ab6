"""The tables. Migrations in ``migrations/versions`` create and change them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row: the index-wide change counter, bumped by every write (like PyPI's serial).
index_state = Table(
    "index_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("serial", BigInteger, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # canonical (PEP 503)
    Column("display_name", String(200), nullable=False),
    # The index serial of the last change to this project's files: pages are cached by it.
    Column("serial", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# ALL_PLATFORMS in files.platform: hosted for every platform (sdists, pure wheels).
ALL_PLATFORMS = ""

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False, index=True),
    Column("platform", String(100), nullable=False),
    Column("filename", String(300), nullable=False),
    Column("version", String(100), nullable=False),
    Column("packagetype", String(20), nullable=False),  # sdist | bdist_wheel
    Column("sha256", String(64), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("requires_python", String(200)),
    Column("metadata_sha256", String(64)),  # a wheel's METADATA, served as <file>.metadata
    Column("yanked", Boolean, nullable=False, default=False),
    Column("yanked_reason", Text),
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    Column("uploaded_by", String(200), nullable=False),
    Column("origin", String(20), nullable=False),  # upload | build
    UniqueConstraint("platform", "filename", name="uq_files_platform_filename"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 of the secret
    Column("prefix", String(16), nullable=False),  # first characters, to recognise it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("project", String(200)),
    Column("filename", String(300)),
    Column("detail", Text),
)

Index("ix_audit_events_project", audit_events.c.project)
