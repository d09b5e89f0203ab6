"""upstream proxy

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 03:26:48.287767
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "build_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("platform", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_requests")),
        sa.UniqueConstraint("project", "version", "platform", name="uq_build_requests_pvp"),
    )
    op.create_table(
        "upstream_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=300), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_files")),
        sa.UniqueConstraint("sha256", "filename", name="uq_upstream_files_sha256_filename"),
    )
    op.create_table(
        "upstream_pages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upstream", sa.String(length=500), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_pages")),
        sa.UniqueConstraint("upstream", "project", name="uq_upstream_pages_upstream_project"),
    )
    with op.batch_alter_table("upstream_pages", schema=None) as batch_op:
        batch_op.create_index("ix_upstream_pages_project", ["project"], unique=False)

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("hosted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    # Projects with uploaded files are hosted here.
    projects = sa.table("projects", sa.column("id"), sa.column("hosted", sa.Boolean))
    files = sa.table("files", sa.column("project_id"), sa.column("origin"))
    uploaded = sa.select(files.c.project_id).where(files.c.origin == "upload")
    op.execute(projects.update().where(projects.c.id.in_(uploaded)).values(hosted=True))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("hosted")

    with op.batch_alter_table("upstream_pages", schema=None) as batch_op:
        batch_op.drop_index("ix_upstream_pages_project")

    op.drop_table("upstream_pages")
    op.drop_table("upstream_files")
    op.drop_table("build_requests")
