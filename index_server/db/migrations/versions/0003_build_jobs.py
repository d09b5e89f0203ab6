"""build jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 03:32:50.392417
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "build_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("platform", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("lease", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waited_seconds", sa.Float(), nullable=True),
        sa.Column("build_seconds", sa.Float(), nullable=True),
        sa.Column("image_id", sa.String(length=200), nullable=True),
        sa.Column("error_category", sa.String(length=50), nullable=True),
        sa.Column("error_summary", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), server_default="", nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_jobs")),
        sa.UniqueConstraint("project", "version", "platform", name="uq_build_jobs_pvp"),
    )
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_build_jobs_project", ["project"], unique=False)
        batch_op.create_index("ix_build_jobs_state_platform", ["state", "platform"], unique=False)

    op.create_table(
        "build_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_settings")),
        sa.UniqueConstraint("project", name=op.f("uq_build_settings_project")),
    )
    op.create_table(
        "skip_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skip_list")),
        sa.UniqueConstraint("project", "version", name="uq_skip_list_project_version"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("platforms", sa.Text(), nullable=False),
        sa.Column("runner", sa.String(length=20), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_job", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("name", name=op.f("uq_workers_name")),
    )
    # Build requests recorded before jobs existed become queued jobs.
    op.execute(
        "INSERT INTO build_jobs (project, version, platform, state, source, requested_by,"
        " requested_at, attempts, log)"
        " SELECT project, version, platform, 'queued', source, 'index', requested_at, 0, ''"
        " FROM build_requests"
    )
    op.drop_table("build_requests")


def downgrade() -> None:
    op.create_table(
        "build_requests",
        sa.Column("id", sa.INTEGER(), nullable=False),
        sa.Column("project", sa.VARCHAR(length=200), nullable=False),
        sa.Column("version", sa.VARCHAR(length=100), nullable=False),
        sa.Column("platform", sa.VARCHAR(length=100), nullable=False),
        sa.Column("source", sa.VARCHAR(length=50), nullable=False),
        sa.Column("requested_at", sa.DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_requests")),
        sa.UniqueConstraint("project", "version", "platform", name=op.f("uq_build_requests_pvp")),
    )
    op.drop_table("workers")
    op.drop_table("skip_list")
    op.drop_table("build_settings")
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_build_jobs_state_platform")
        batch_op.drop_index("ix_build_jobs_project")

    op.drop_table("build_jobs")
