"""``wheelfarm owner`` and ``wheelfarm audit``: project owners and the audit log."""

from __future__ import annotations

import click
from packaging.utils import canonicalize_name


def _services(ctx: click.Context):  # type: ignore[no-untyped-def]
    """The server's services, for the root command's settings (as index_server.cli)."""
    from index_server.cli_settings import root_settings
    from index_server.services import build_services

    return build_services(root_settings(ctx))


def _project(name: str) -> str:
    from index_server.views.common import valid_name

    if not valid_name(name):
        raise click.ClickException(f"{name!r} is not a valid project name")
    return canonicalize_name(name)


@click.group()
def owner() -> None:
    """Project owners: who may upload a hosted project."""


@owner.command("list")
@click.argument("project")
@click.pass_context
def owner_list(ctx: click.Context, project: str) -> None:
    from index_server import owners

    for row in owners.list_owners(_services(ctx), _project(project)):
        click.echo(f"{row['owner']}  (added {row['added_at']} by {row['added_by']})")


@owner.command("add")
@click.argument("project")
@click.argument("name")
@click.pass_context
def owner_add(ctx: click.Context, project: str, name: str) -> None:
    """Make NAME (a token's owner) an owner of PROJECT; also lets a name that exists
    upstream be hosted here."""
    from index_server import owners

    added = owners.add_owner(_services(ctx), _project(project), name, "cli")
    click.echo(f"{name} {'is now' if added else 'was already'} an owner of {_project(project)}")


@owner.command("remove")
@click.argument("project")
@click.argument("name")
@click.pass_context
def owner_remove(ctx: click.Context, project: str, name: str) -> None:
    from index_server import owners

    if not owners.remove_owner(_services(ctx), _project(project), name, "cli"):
        raise click.ClickException(f"{name!r} is not an owner of {_project(project)!r}")
    click.echo(f"{name} is no longer an owner of {_project(project)}")


@click.command()
@click.option("--action", default=None, help="An action, or a prefix ending in '*'.")
@click.option("--project", default=None)
@click.option("--actor", default=None, help="Who did it (a token's name, as token:NAME).")
@click.option("--owner", "owner_name", default=None)
@click.option("--token-id", type=int, default=None)
@click.option("--since", default=None, help="An ISO 8601 time: events at or after it.")
@click.option("--until", default=None, help="An ISO 8601 time: events at or before it.")
@click.option("--before", type=int, default=None, help="Only events older than this id.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.pass_context
def audit(
    ctx: click.Context,
    action: str | None,
    project: str | None,
    actor: str | None,
    owner_name: str | None,
    token_id: int | None,
    since: str | None,
    until: str | None,
    before: int | None,
    limit: int,
) -> None:
    """The audit log, newest first: every write, who made it, from where."""
    from index_server import audit as audit_log
    from index_server import repository
    from index_server.db.engine import read_connection

    try:
        where = audit_log.EventFilter(
            action=action,
            project=canonicalize_name(project) if project else None,
            actor=actor,
            owner=owner_name,
            token_id=token_id,
            before=before,
            since=audit_log.parse_time(since, "--since") if since else None,
            until=audit_log.parse_time(until, "--until") if until else None,
        )
    except audit_log.BadFilter as exc:
        raise click.ClickException(str(exc)) from None
    with read_connection(_services(ctx).engine) as conn:
        events = repository.list_events(conn, limit, where)
    for e in events:
        who = e["actor"] + (f" [token {e['token_id']}, {e['owner']}]" if e["token_id"] else "")
        where_from = f" from {e['address']}" if e["address"] else ""
        target = " ".join(str(v) for v in (e["project"], e["filename"]) if v)
        click.echo(
            f"{e['id']:>6}  {e['at']}  {e['action']:<16} {target}  by {who}{where_from}"
            + (f"  ({e['detail']})" if e["detail"] else "")
        )
