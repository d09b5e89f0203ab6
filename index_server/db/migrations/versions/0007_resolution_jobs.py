"""resolution jobs: a job kind, and the inputs of each resolution

Revision ID: 0007_resolution_jobs
Revises: 0006_export
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_resolution_jobs"
down_revision = "0006_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=20), server_default="build", nullable=False)
        )
    op.create_table(
        "resolution_inputs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("constraints", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resolution_inputs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_resolution_inputs_job_id")),
    )


def downgrade() -> None:
    op.drop_table("resolution_inputs")
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.drop_column("kind")
