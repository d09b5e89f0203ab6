"""indexes for the export's change polls

The exporter (``wheelfarm export --follow``) asks several times a second for the projects
changed since a serial and the upstream pages fetched since a time.

Revision ID: 0006_export
Revises: 0003
"""

from alembic import op

revision = "0006_export"
down_revision = "0005_owners_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_projects_serial", "projects", ["serial"])
    op.create_index("ix_upstream_pages_fetched_at", "upstream_pages", ["fetched_at"])


def downgrade() -> None:
    op.drop_index("ix_upstream_pages_fetched_at", table_name="upstream_pages")
    op.drop_index("ix_projects_serial", table_name="projects")
