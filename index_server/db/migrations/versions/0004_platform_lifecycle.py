"""platform lifecycle: platform states, download counts, tracked projects

Revision ID: 0004_platform_lifecycle
Revises: 0003
Create Date: 2026-12-07 05:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_platform_lifecycle"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("platform_image_id", sa.String(length=200), nullable=True))
    op.create_table(
        "platform_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=100), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image_id", sa.String(length=200), nullable=True),
        sa.Column("image_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_states")),
        sa.UniqueConstraint("platform", name=op.f("uq_platform_states_platform")),
    )
    op.create_table(
        "project_downloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_downloads")),
        sa.UniqueConstraint("project", "day", name="uq_project_downloads_project_day"),
    )
    op.create_table(
        "tracked_projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("explicit", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("versions", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_projects")),
        sa.UniqueConstraint("project", name=op.f("uq_tracked_projects_project")),
    )


def downgrade() -> None:
    op.drop_table("tracked_projects")
    op.drop_table("project_downloads")
    op.drop_table("platform_states")
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.drop_column("platform_image_id")
