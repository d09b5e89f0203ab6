"""The click commands ``wheelfarm request`` and ``wheelfarm warm``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from client.warm import report
from client.warm.client import ApiError, WheelfarmClient
from client.warm.environment import marker_environment
from client.warm.lockfiles import LockFileError, lock_kind, merge, read_lock
from client.warm.pages import matching_versions, page_files, wheels_for
from client.warm.pins import Pinned
from client.warm.report import Item
from client.warm.requirements import RequirementsFileError, read_inputs
from client.warm.resolution import (
    Resolution,
    ResolutionError,
    ResolutionUnfinished,
    resolve_on_server,
)
from platforms import Platform

F = TypeVar("F", bound=Callable[..., Any])
PAGE_THREADS = 8


def server_options(func: F) -> F:
    func = click.option(
        "--token",
        envvar="WHEELFARM_TOKEN",
        default=None,
        help="API token (upload or admin scope). Env: WHEELFARM_TOKEN.",
    )(func)
    func = click.option(
        "--server",
        envvar="WHEELFARM_SERVER_URL",
        required=True,
        help="The wheelfarm server, e.g. https://wheels.example.com. Env: WHEELFARM_SERVER_URL.",
    )(func)
    return func


def _platforms(client: WheelfarmClient, names: Sequence[str]) -> list[Platform]:
    known = client.platforms()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown platform(s) {', '.join(unknown)}; the server has {', '.join(sorted(known))}",
            param_hint="--platform",
        )
    return [known[n] for n in dict.fromkeys(names)]


# --- wheelfarm request -------------------------------------------------------------------


@click.command("request")
@click.argument("spec")
@click.option(
    "--platform",
    "platform_names",
    multiple=True,
    required=True,
    help="Platform to build for; repeat for several.",
)
@click.option("--all-matching", is_flag=True, help="Every matching version, not only the newest.")
@click.option("--pre", is_flag=True, help="Consider pre-releases (as pip's --pre).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@server_options
def request_cmd(
    spec: str,
    platform_names: tuple[str, ...],
    all_matching: bool,
    pre: bool,
    as_json: bool,
    server: str,
    token: str | None,
) -> None:
    """Queue builds of the version(s) of SPEC (a PEP 508 requirement) for platforms.

    The version is resolved against each platform's index page as pip would: the newest
    non-yanked version the specifier allows (pre-releases only if nothing else matches,
    the specifier names one, or --pre), whose Requires-Python admits the platform's Python.
    Exits 1 if some platform has no matching version.
    """
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        raise click.BadParameter(str(exc), param_hint="SPEC") from None
    client = WheelfarmClient(server, token)
    try:
        rows = _request(client, requirement, _platforms(client, platform_names), all_matching, pre)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"requirement": str(requirement), "requests": rows}, indent=2))
    else:
        click.echo(
            report.table(
                [
                    [
                        r["project"],
                        r["version"] or "-",
                        r["platform"],
                        r["outcome"],
                        str(r["job_id"] or ""),
                        r["state"] or "",
                        r.get("detail", ""),
                    ]
                    for r in rows
                ],
                ["PROJECT", "VERSION", "PLATFORM", "OUTCOME", "JOB", "STATE", "DETAIL"],
            )
        )
        queued = sum(r["outcome"] == "queued" for r in rows)
        existed = sum(r["outcome"] in ("exists", "has_wheel") for r in rows)
        click.echo(f"\n{queued} queued, {existed} already existed (a job or a wheel)")
    if any(r["outcome"] in ("not_found", "no_match") for r in rows):
        sys.exit(1)


def _request(
    client: WheelfarmClient,
    requirement: Requirement,
    platforms: list[Platform],
    all_matching: bool,
    pre: bool,
) -> list[dict[str, Any]]:
    project = canonicalize_name(requirement.name)
    rows: list[dict[str, Any]] = []
    wanted: dict[str, list[str]] = {}  # version -> platforms
    for platform in platforms:

        def row(outcome: str, detail: str, name: str = platform.name) -> dict[str, Any]:
            return {
                "project": project,
                "version": None,
                "platform": name,
                "outcome": outcome,
                "job_id": None,
                "state": None,
                "detail": detail,
            }

        if requirement.marker and not requirement.marker.evaluate(marker_environment(platform)):
            rows.append(row("marker", f"marker is false here: {requirement.marker}"))
            continue
        page = client.project_page(platform.name, project)
        if page is None:
            rows.append(row("not_found", "no such project on the platform's index"))
            continue
        files = page_files(page)
        versions = matching_versions(files, requirement, platform, pre=pre)
        if not versions:
            available = sorted({f.version for f in files}, reverse=True)[:8]
            rows.append(
                row(
                    "no_match",
                    f"nothing matches {requirement.specifier or '*'} for Python "
                    f"{platform.python} (on the index: "
                    f"{', '.join(map(str, available)) or 'no files'})",
                )
            )
            continue
        for version in versions if all_matching else versions[:1]:
            wanted.setdefault(str(version), []).append(platform.name)
    for version, names in wanted.items():
        for outcome in client.request_builds(project, version, names):
            rows.append({**outcome, "detail": ""})
    return rows


# --- wheelfarm warm ----------------------------------------------------------------------


@click.command("warm")
@click.option(
    "-r",
    "--requirement",
    "requirements",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="requirements.txt (resolved by a worker of the platform), pylock.toml or uv.lock; "
    "repeatable.",
)
@click.option(
    "-c",
    "--constraint",
    "constraints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Constraints file for the requirement files' resolution; repeatable.",
)
@click.option("--platform", "platform_name", required=True, help="The platform to warm.")
@click.option("--wait", is_flag=True, help="Wait for the builds to finish.")
@click.option(
    "--timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the resolution, and with --wait for the builds too.",
)
@click.option(
    "--poll-interval", type=float, default=2.0, show_default=True, help="Seconds between polls."
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@server_options
def warm_cmd(
    requirements: tuple[Path, ...],
    constraints: tuple[Path, ...],
    platform_name: str,
    wait: bool,
    timeout: float,
    poll_interval: float,
    as_json: bool,
    server: str,
    token: str | None,
) -> None:
    """Make sure every distribution the requirements install on a platform has a wheel.

    Requirement files (their -r/-c includes read here, hashes kept) go to the server as
    text: a worker of the platform resolves them in the platform's build container, with the
    projects' build settings, and the server keeps the closure for the same inputs. This
    machine resolves nothing and builds nothing (no pip, no compiler). Lock files
    (pylock.toml, uv.lock) are read here, by the platform's markers. Then a build of every
    distribution without a wheel for the platform is queued; with --wait, warm waits for
    them. Exit status: 0 if every needed wheel exists, 1 if something failed or does not
    resolve, 3 if the resolution or builds are still queued or running (no --wait, or the
    timeout passed).
    """
    out = sys.stderr if as_json else sys.stdout
    client = WheelfarmClient(server, token)
    inputs = [str(p) for p in requirements]
    started = time.monotonic()
    resolution: Resolution | None = None
    try:
        platform = _platforms(client, [platform_name])[0]
        pinned, resolution = _closure(
            client, platform, requirements, constraints, timeout, poll_interval, out
        )
    except (RequirementsFileError, LockFileError) as exc:
        _fail(as_json, client, platform_name, inputs, "cannot read the inputs", exc)
    except ResolutionError as exc:
        _fail(as_json, client, platform_name, inputs, f"cannot resolve for {platform_name}", exc)
    except ResolutionUnfinished as exc:
        _fail(as_json, client, platform_name, inputs, "not resolved yet", exc, report.EXIT_PENDING)
    except ApiError as exc:
        _fail(as_json, client, platform_name, inputs, "server error", exc)
    try:
        items = [Item(p.name, p.version, p.source, direct=p.direct) for p in pinned]
        _find_wheels(client, platform, [i for i in items if not i.direct], first=True)
        _request_missing(client, platform, items)
        # A job may have finished between the page check and the request.
        _find_wheels(client, platform, [i for i in items if i.state == "succeeded"])
        if wait:
            left = max(0.0, timeout - (time.monotonic() - started))
            _wait(client, platform, items, left, poll_interval, out)
        _details(client, items)
    except ApiError as exc:
        _fail(as_json, client, platform_name, inputs, "server error", exc)
    if as_json:
        body = report.json_report(items, platform.name, client, inputs)
        body["resolution"] = _resolution_json(client, resolution)
        click.echo(json.dumps(body, indent=2))
    else:
        if resolution is not None:
            click.echo("\n" + _resolution_line(resolution))
        click.echo("\n" + report.summary(items, platform.name, client, waited=wait))
    sys.exit(report.exit_code(items))


def _resolution_json(
    client: WheelfarmClient, resolution: Resolution | None
) -> dict[str, Any] | None:
    if resolution is None:
        return None
    job = resolution.job
    return {
        "job_id": job["id"],
        "reused": resolution.reused,
        "state": job["state"],
        "worker": job.get("worker"),
        "distributions": len(resolution.pins),
        "console_url": client.console_url(job["id"]),
        "api_url": client.api_url(job["id"]),
    }


def _resolution_line(resolution: Resolution) -> str:
    job = resolution.job
    how = (
        "the stored closure of these inputs"
        if resolution.reused
        else f"resolved by worker {job.get('worker') or '?'}"
    )
    return f"resolution job {job['id']}: {len(resolution.pins)} distributions, {how}"


def _fail(
    as_json: bool,
    client: WheelfarmClient,
    platform: str,
    inputs: list[str],
    what: str,
    exc: Exception,
    code: int = report.EXIT_FAILED,
) -> NoReturn:
    if as_json:
        body: dict[str, Any] = {
            "server": client.server,
            "platform": platform,
            "inputs": inputs,
            "ok": False,
            "exit_code": code,
            "error": f"{what}: {exc}",
            "distributions": [],
        }
        job = getattr(exc, "job", None)
        if job is not None:
            body["resolution"] = {
                "job_id": job["id"],
                "state": job["state"],
                "error_category": job.get("error_category"),
                "error_summary": job.get("error_summary"),
                "log_tail": report.log_tail(job.get("log")),
                "console_url": client.console_url(job["id"]),
                "api_url": client.api_url(job["id"]),
            }
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"error: {what}:\n{exc}", err=True)
    sys.exit(code)


def _closure(
    client: WheelfarmClient,
    platform: Platform,
    requirements: Sequence[Path],
    constraints: Sequence[Path],
    timeout: float,
    poll_interval: float,
    out: Any,
) -> tuple[list[Pinned], Resolution | None]:
    """The pins of the lock files (read here) and of the requirement files (resolved by a
    worker of the platform), merged."""
    locks = [p for p in requirements if lock_kind(p)]
    plain = [p for p in requirements if not lock_kind(p)]
    groups = [read_lock(p, platform) for p in locks]
    resolution = None
    if plain:
        inputs = read_inputs(plain, list(constraints))
        resolution = resolve_on_server(
            client, platform.name, inputs, timeout=timeout, poll_interval=poll_interval, out=out
        )
        groups.append(resolution.pins)
    elif constraints:
        raise LockFileError("constraints apply to requirement files, and none was given")
    return merge(groups), resolution


def _find_wheels(
    client: WheelfarmClient, platform: Platform, items: Sequence[Item], first: bool = False
) -> None:
    """Look up each item's wheel for the platform on the index pages (one per project)."""
    projects = sorted({i.project for i in items})
    with ThreadPoolExecutor(PAGE_THREADS) as pool:
        pages = dict(
            zip(
                projects,
                pool.map(lambda p: client.project_page(platform.name, p), projects),
                strict=True,
            )
        )
    for item in items:
        page = pages[item.project]
        if page is None:
            if first:
                item.note = "not on the platform's index"
            continue
        found = wheels_for(page_files(page), item.version, platform)
        if found:
            item.wheel = found[0]
            item.had_wheel = first


def _request_missing(client: WheelfarmClient, platform: Platform, items: Sequence[Item]) -> None:
    for item in items:
        if item.direct or item.wheel or item.note:
            continue
        outcome = client.request_builds(item.project, item.version, [platform.name])[0]
        item.outcome = outcome["outcome"]
        item.job_id = outcome.get("job_id")
        item.state = outcome.get("state")
        if item.outcome == "has_wheel":
            item.note = "the server has a wheel of this version, but none this platform accepts"


def _wait(
    client: WheelfarmClient,
    platform: Platform,
    items: Sequence[Item],
    timeout: float,
    poll_interval: float,
    out: Any,
) -> None:
    tracked = {i.job_id: i for i in items if i.job_id is not None}
    progress = report.Progress(items, out)
    deadline = time.monotonic() + timeout
    try:
        progress.update(items)
        while True:
            active = [i for i in tracked.values() if i.state in report.ACTIVE_STATES]
            if not active or time.monotonic() >= deadline:
                break
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
            try:
                finished = _poll(client, platform, active)
            except ApiError as exc:
                if exc.status and exc.status < 500:
                    raise
                click.echo(f"warning: polling failed, will retry: {exc}", file=out)
                continue
            if finished:
                _find_wheels(client, platform, finished)
            progress.update(items)
    finally:
        progress.close()
    if any(i.state in report.ACTIVE_STATES for i in tracked.values()):
        click.echo(f"timed out after {timeout:g} s with builds unfinished", file=out)


def _poll(client: WheelfarmClient, platform: Platform, active: Sequence[Item]) -> list[Item]:
    """Refresh the jobs' states; returns the items whose job has just succeeded."""
    jobs = {j["id"]: j for j in client.builds(platform.name)}
    finished = []
    for item in active:
        job = jobs.get(item.job_id) or client.build(item.job_id)  # type: ignore[arg-type]
        if job["state"] != item.state and job["state"] == "succeeded":
            finished.append(item)
        item.state = job["state"]
        item.compiled = (job.get("result") or {}).get("compiled")
    return finished


def _details(client: WheelfarmClient, items: Sequence[Item]) -> None:
    """The error category, summary and last log lines of every failed build."""
    for item in items:
        if item.job_id is None or not item.failed:
            continue
        job = client.build(item.job_id)
        item.state = job["state"]
        item.error_category = job.get("error_category")
        item.error_summary = job.get("error_summary") or job.get("reason")
        item.log_tail = report.log_tail(job.get("log"))
