"""The tables. Migrations in ``migrations/versions`` create and change them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
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
    # Uploaded here: served from here only, never merged with an upstream's files.
    Column("hosted", Boolean, nullable=False, server_default=false()),
)

Index("ix_projects_serial", projects.c.serial)  # the export's polls: changed since a serial

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
    # What pip sees: normalized name, version, build tag and tags (or "sdist"); see
    # distributions.DistributionName.key. One file per key and platform scope.
    Column("dist_key", String(300)),
    Column("build_job_id", Integer),  # the build job that uploaded it (origin build)
    UniqueConstraint("platform", "filename", name="uq_files_platform_filename"),
    UniqueConstraint("platform", "dist_key", name="uq_files_platform_dist_key"),
)

# A deleted file leaves its identity behind: it may come back only byte for byte.
file_tombstones = Table(
    "file_tombstones",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("platform", String(100), nullable=False),
    Column("dist_key", String(300), nullable=False),
    Column("filename", String(300), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
    Column("deleted_by", String(200), nullable=False),
)
Index(
    "ix_file_tombstones_platform_dist_key", file_tombstones.c.platform, file_tombstones.c.dist_key
)

# Who may upload a hosted project: owners (a token's owner: a user or a team).
project_owners = Table(
    "project_owners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False),  # canonical (PEP 503)
    Column("owner", String(200), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(200), nullable=False),
    UniqueConstraint("project", "owner", name="uq_project_owners_project_owner"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("scope", String(20), nullable=False),
    Column("owner", String(200)),  # the user or team it belongs to (None: its name)
    Column("projects", Text),  # JSON list of names/globs it may write (None: any)
    Column("platform", String(100)),  # a build token's platform (None: any)
    Column("worker", String(200)),  # a build token's worker name (None: any)
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
    Column("token_id", Integer),  # None: WHEELFARM_ADMIN_TOKEN, the CLI, or anonymous
    Column("owner", String(200)),
    Column("address", String(100)),  # the client's address (None: the CLI)
    Column("action", String(50), nullable=False),
    Column("project", String(200)),
    Column("filename", String(300)),
    Column("detail", Text),
)

Index("ix_audit_events_project", audit_events.c.project)
Index("ix_audit_events_action", audit_events.c.action)

# Upstream project pages, shared by every server process and node. ``files`` holds the
# page's files as normalized JSON (absolute URLs); ``content_hash`` identifies that content.
upstream_pages = Table(
    "upstream_pages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("upstream", String(500), nullable=False),
    Column("project", String(200), nullable=False),
    Column("status", Integer, nullable=False),  # 200 or 404
    Column("files", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("etag", String(500)),
    Column("last_modified", String(100)),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    UniqueConstraint("upstream", "project", name="uq_upstream_pages_upstream_project"),
)
Index("ix_upstream_pages_project", upstream_pages.c.project)
Index("ix_upstream_pages_fetched_at", upstream_pages.c.fetched_at)  # the export's polls

# Upstream files pulled through and kept in storage (by sha256, checked at download).
upstream_files = Table(
    "upstream_files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("filename", String(300), nullable=False),
    Column("project", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("source_url", Text, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("sha256", "filename", name="uq_upstream_files_sha256_filename"),
)

# A build job: one (project, version, platform), queued until a worker claims it.
build_jobs = Table(
    "build_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("platform", String(100), nullable=False),
    # queued | running | succeeded | failed | skipped | cancelled
    Column("state", String(20), nullable=False),
    Column("source", String(50), nullable=False),  # first-sight | request | warm | rebuild
    Column("requested_by", String(200), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", DateTime(timezone=True)),  # retry backoff
    Column("worker", String(200)),
    Column("lease", String(64)),  # the current claim's secret; results need it
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("waited_seconds", Float),
    Column("build_seconds", Float),
    Column("image_id", String(200)),
    Column("error_category", String(50)),
    Column("error_summary", Text),
    Column("reason", Text),  # why skipped or cancelled
    Column("log", Text, nullable=False, server_default=""),
    Column("result", Text),  # JSON: wheels, shared libraries, OS packages, settings used
    # The platform's build image (wheelfarm-build/<platform>) the worker built on; wheels
    # of jobs built on another image than the platform's current one are stale.
    Column("platform_image_id", String(200)),
    # build | resolve. A resolution job (index_server/resolutions.py) has project "" and
    # its inputs' key as version; its inputs are in ``resolution_inputs``.
    Column("kind", String(20), nullable=False, server_default="build"),
    UniqueConstraint("project", "version", "platform", name="uq_build_jobs_pvp"),
)
Index("ix_build_jobs_state_platform", build_jobs.c.state, build_jobs.c.platform)
Index("ix_build_jobs_project", build_jobs.c.project)

# What a resolution job resolves: a requirements file's text (its -r includes already
# inlined by the caller) and its constraints, for the job's platform.
resolution_inputs = Table(
    "resolution_inputs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False, unique=True),
    Column("requirements", Text, nullable=False),
    Column("constraints", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# What a project needs to build: extra constraints, environment, OS packages, a command.
build_settings = Table(
    "build_settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False, unique=True),
    Column("settings", Text, nullable=False),  # JSON, see builder.protocol.BUILD_SETTINGS
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# Never build these: a whole project (version "") or one version.
skip_list = Table(
    "skip_list",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("project", "version", name="uq_skip_list_project_version"),
)

# Workers as last seen through their heartbeats.
workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("platforms", Text, nullable=False),  # JSON list
    Column("runner", String(20), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("current_job", Integer),
)

# A platform as the server has known it: when first seen, its current build image (the
# newest one a worker reported), and when it was backfilled.
platform_states = Table(
    "platform_states",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("platform", String(100), nullable=False, unique=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("image_id", String(200)),
    Column("image_seen_at", DateTime(timezone=True)),
    Column("backfilled_at", DateTime(timezone=True)),
)

# Downloads per project and day (UTC, "YYYY-MM-DD"), counted in memory and added in batches:
# what "recently downloaded" means when a new platform is backfilled.
project_downloads = Table(
    "project_downloads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False),
    Column("day", String(10), nullable=False),
    Column("count", BigInteger, nullable=False),
    UniqueConstraint("project", "day", name="uq_project_downloads_project_day"),
)

# Projects whose new upstream releases are built before anyone asks (proactive builds).
# ``versions``: the versions seen so far (JSON list); only later ones are new releases.
tracked_projects = Table(
    "tracked_projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project", String(200), nullable=False, unique=True),
    Column("explicit", Boolean, nullable=False, server_default=false()),  # tracked by an admin
    Column("versions", Text, nullable=False),
    Column("checked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
)
