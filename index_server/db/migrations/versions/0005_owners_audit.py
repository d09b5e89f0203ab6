"""owners, immutability by distribution, scoped tokens, audit log details

Revision ID: 0005_owners_audit
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_owners_audit"
down_revision = "0004_platform_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dist_key", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("build_job_id", sa.Integer(), nullable=True))
    _fill_dist_keys()
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_files_platform_dist_key", ["platform", "dist_key"])

    op.create_table(
        "file_tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=100), nullable=False),
        sa.Column("dist_key", sa.String(length=300), nullable=False),
        sa.Column("filename", sa.String(length=300), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_tombstones")),
    )
    with op.batch_alter_table("file_tombstones", schema=None) as batch_op:
        batch_op.create_index(
            "ix_file_tombstones_platform_dist_key", ["platform", "dist_key"], unique=False
        )
    op.create_table(
        "project_owners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_owners")),
        sa.UniqueConstraint("project", "owner", name="uq_project_owners_project_owner"),
    )

    _owners_from_uploads()
    _rename_duplicate_tokens()
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("projects", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("platform", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint("uq_tokens_name", ["name"])

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("address", sa.String(length=100), nullable=True))
        batch_op.create_index("ix_audit_events_action", ["action"], unique=False)


def _fill_dist_keys() -> None:
    """Existing files get their identity; a later duplicate (stored before identities were
    checked) keeps a key of its own, marked with its id, so the constraint holds."""
    from index_server.distributions import InvalidDistribution, parse_filename

    conn = op.get_bind()
    files = sa.table(
        "files",
        sa.column("id"),
        sa.column("platform"),
        sa.column("filename"),
        sa.column("dist_key"),
    )
    seen: set[tuple[str, str]] = set()
    rows = conn.execute(sa.select(files.c.id, files.c.platform, files.c.filename).order_by("id"))
    for file_id, platform, filename in rows.all():
        try:
            key = parse_filename(filename).key
        except InvalidDistribution:
            key = filename
        if (platform, key) in seen:
            key = f"{key[:280]}#{file_id}"
        seen.add((platform, key))
        conn.execute(files.update().where(files.c.id == file_id).values(dist_key=key))


def _owners_from_uploads() -> None:
    """Hosted projects are owned by the tokens that uploaded to them (a token's owner is its
    name until it is given another)."""
    from datetime import UTC, datetime

    conn = op.get_bind()
    files = sa.table(
        "files", sa.column("project_id"), sa.column("uploaded_by"), sa.column("origin")
    )
    projects = sa.table("projects", sa.column("id"), sa.column("name"))
    owners = sa.table(
        "project_owners",
        sa.column("project"),
        sa.column("owner"),
        sa.column("added_at"),
        sa.column("added_by"),
    )
    rows = conn.execute(
        sa.select(projects.c.name, files.c.uploaded_by)
        .join(files, files.c.project_id == projects.c.id)
        .where(files.c.origin == "upload", files.c.uploaded_by.startswith("token:"))
        .distinct()
    ).all()
    now = datetime.now(UTC)
    for project, uploaded_by in rows:
        conn.execute(
            owners.insert().values(
                project=project,
                owner=uploaded_by.removeprefix("token:"),
                added_at=now,
                added_by="migration 0005 (uploaded before owners existed)",
            )
        )


def _rename_duplicate_tokens() -> None:
    """Token names become unique: a repeated name gets its id appended."""
    conn = op.get_bind()
    tokens = sa.table("tokens", sa.column("id"), sa.column("name"))
    seen: set[str] = set()
    for token_id, name in conn.execute(sa.select(tokens.c.id, tokens.c.name).order_by("id")).all():
        if name in seen:
            conn.execute(
                tokens.update()
                .where(tokens.c.id == token_id)
                .values(name=f"{name[:180]} #{token_id}")
            )
        seen.add(name)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_action")
        batch_op.drop_column("address")
        batch_op.drop_column("owner")
        batch_op.drop_column("token_id")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_constraint("uq_tokens_name", type_="unique")
        batch_op.drop_column("worker")
        batch_op.drop_column("platform")
        batch_op.drop_column("projects")
        batch_op.drop_column("owner")
    op.drop_table("project_owners")
    with op.batch_alter_table("file_tombstones", schema=None) as batch_op:
        batch_op.drop_index("ix_file_tombstones_platform_dist_key")
    op.drop_table("file_tombstones")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_constraint("uq_files_platform_dist_key", type_="unique")
        batch_op.drop_column("build_job_id")
        batch_op.drop_column("dist_key")
