"""Resolution jobs: the closure of a requirements file, computed where the platform is.

``wheelfarm warm -r requirements.txt`` sends the file's text (its ``-r`` includes inlined by
the client, ``--hash`` options kept) and its constraints here. The server checks that every
line parses, then queues a job of kind ``resolve`` in ``build_jobs`` (project "", version
the inputs' key): queued, claimed, leased, heartbeated, logged, requeued on a lost worker
like a build (index_server/jobs.py). A worker of the platform runs pip's resolver in the
platform's build container (builder/resolve.py) and finishes the job with the pinned
closure; the server then queues a build of every pin pip would install from an sdist.

A stored closure is reused for the same inputs and platform while it is fresh: for at most
``WHEELFARM_RESOLUTION_TTL`` seconds after it finished, and only while each page it pinned
(the platform's page of every project in the closure) lists the same versions and the same
yanked files as when it finished. Wheels built since then do not count (they change no
pin); a new release, a yank or a deleted version does. A failed resolution is run again
when asked again. An upstream that cannot be reached counts as unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from sqlalchemy import select, update

from index_server import jobs, repository
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import build_jobs, resolution_inputs
from index_server.services import Services
from platforms import Platform

KIND = "resolve"
PAGE_TYPE = "application/vnd.pypi.simple.v1+json"
# Options a requirements line may carry: pip's hash checking and how it picks files. Index
# options (-i, --extra-index-url, -f, ...) are refused: the platform's index is the only one.
LINE_OPTIONS = ("--hash",)
GLOBAL_OPTIONS = ("--pre", "--require-hashes", "--prefer-binary", "--only-binary", "--no-binary")


class RequirementsError(ValueError):
    """The requirements text cannot be taken; ``str()`` is one line naming the line."""


class RequirementsTooLarge(RequirementsError):
    pass


@dataclass(frozen=True)
class Requested:
    job: dict[str, Any]
    reused: bool  # a stored, fresh closure: no new job


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: continuations joined, comments cut."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = pending + raw
        pending = ""
        if line.lstrip().startswith("#"):
            continue
        line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line:
            lines.append((start, line))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def check_requirements(text: str, what: str = "requirements") -> list[str]:
    """The project names the text requires; RequirementsError for the first bad line."""
    names = []
    for number, line in _logical_lines(text):
        tokens = line.split()
        if tokens[0].startswith("-"):
            option = tokens[0].split("=", 1)[0]
            if option in GLOBAL_OPTIONS:
                continue
            if option in ("-r", "--requirement", "-c", "--constraint"):
                raise RequirementsError(
                    f"{what} line {number}: {option} includes are inlined by the client; "
                    "send their text"
                )
            raise RequirementsError(
                f"{what} line {number}: option {option} is not taken (the platform's index "
                "is the only index, and local paths are not on the server)"
            )
        cut = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
        options = tokens[cut:]
        while options:
            option = options.pop(0)
            name = option.split("=", 1)[0]
            if name not in LINE_OPTIONS:
                raise RequirementsError(f"{what} line {number}: option {name} is not taken")
            if "=" not in option:
                if not options:
                    raise RequirementsError(f"{what} line {number}: {name} needs a value")
                option += "=" + options.pop(0)
            algorithm, _, digest = option.split("=", 1)[1].partition(":")
            if not digest or algorithm not in hashlib.algorithms_guaranteed:
                raise RequirementsError(f"{what} line {number}: {option} is not a hash")
        try:
            requirement = Requirement(" ".join(tokens[:cut]))
        except InvalidRequirement as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid requirement"
            raise RequirementsError(f"{what} line {number}: {first}") from None
        if requirement.url:
            raise RequirementsError(
                f"{what} line {number}: {requirement.name} @ URL: direct references are not "
                "resolved on the server (only the platform's index is reachable)"
            )
        names.append(requirement.name)
    return names


def inputs_key(requirements: str, constraints: str) -> str:
    text = json.dumps({"requirements": requirements, "constraints": constraints}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()


def check_inputs(services: Services, requirements: str, constraints: str) -> tuple[str, str]:
    """The inputs, normalized and checked (RequirementsError, RequirementsTooLarge)."""
    size = len(requirements.encode()) + len(constraints.encode())
    if size > services.settings.max_requirements_bytes:
        raise RequirementsTooLarge(
            f"the requirements are {size} bytes; this server takes at most "
            f"{services.settings.max_requirements_bytes} (WHEELFARM_MAX_REQUIREMENTS_BYTES)"
        )
    if "\x00" in requirements or "\x00" in constraints:
        raise RequirementsError("NUL characters are not allowed")
    requirements, constraints = _normalized(requirements), _normalized(constraints)
    if not check_requirements(requirements):
        raise RequirementsError("the requirements name no project")
    check_requirements(constraints, "constraints")
    return requirements, constraints


def page_fingerprint(services: Services, platform: Platform, project: str) -> str | None:
    """What of the platform's page of the project a resolution depends on: its versions and
    its yanked files (not its wheels: a wheel built since changes no pin). None when the
    page cannot be had now (an unreachable upstream): counted as unchanged."""
    from index_server.simple.project_page import (
        ProjectNotFound,
        UpstreamUnavailable,
        project_page,
    )

    try:
        page = project_page(services, platform, project, PAGE_TYPE)
    except ProjectNotFound:
        return "missing"
    except UpstreamUnavailable:
        return None
    body = json.loads(page.page.body)
    versions = sorted(body.get("versions", []))
    yanked = sorted(f["filename"] for f in body.get("files", []) if f.get("yanked"))
    return hashlib.sha256(json.dumps([versions, yanked]).encode()).hexdigest()


def _fresh(services: Services, platform: Platform, row: dict[str, Any]) -> bool:
    if row["state"] != "succeeded" or not row["finished_at"]:
        return False
    finished = jobs._aware(row["finished_at"])
    ttl = timedelta(seconds=services.settings.resolution_ttl)
    if finished is None or datetime.now(UTC) - finished > ttl:
        return False
    result = json.loads(row["result"] or "{}")
    for project, fingerprint in (result.get("pages") or {}).items():
        now = page_fingerprint(services, platform, project)
        if now is not None and now != fingerprint:
            return False
    return "closure" in result


def _find(conn: Any, platform: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(build_jobs).where(
                build_jobs.c.kind == KIND,
                build_jobs.c.project == "",
                build_jobs.c.version == key,
                build_jobs.c.platform == platform,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def request_resolution(
    services: Services, platform: Platform, requirements: str, constraints: str, actor: str
) -> Requested:
    """Queue a resolution of checked inputs for the platform, or give the stored one."""
    key = inputs_key(requirements, constraints)
    with read_connection(services.engine) as conn:
        found = _find(conn, platform.name, key)
    if found and (found["state"] in jobs.ACTIVE_STATES or _fresh(services, platform, found)):
        return Requested(jobs.job_json(found), reused=found["state"] == "succeeded")
    now = jobs._now()
    with write_transaction(services.engine) as conn:
        found = _find(conn, platform.name, key)
        if found and found["state"] in jobs.ACTIVE_STATES:  # queued meanwhile
            return Requested(jobs.job_json(found), reused=False)
        if found:  # stale or failed: the same job, again
            conn.execute(
                update(build_jobs)
                .where(build_jobs.c.id == found["id"])
                .values(
                    state="queued",
                    attempts=0,
                    not_before=None,
                    lease=None,
                    worker=None,
                    reason=None,
                    error_category=None,
                    error_summary=None,
                    log="",
                    requested_at=now,
                    requested_by=actor,
                    finished_at=None,
                    lease_expires_at=None,
                    started_at=None,
                    build_seconds=None,
                    waited_seconds=None,
                    image_id=None,
                    platform_image_id=None,
                    result=None,
                )
            )
            job_id = found["id"]
        else:
            job_id = conn.execute(
                jobs._insert(conn)(build_jobs)
                .values(
                    kind=KIND,
                    project="",
                    version=key,
                    platform=platform.name,
                    state="queued",
                    source="warm",
                    requested_by=actor,
                    requested_at=now,
                    attempts=0,
                    log="",
                )
                .returning(build_jobs.c.id)
            ).scalar_one()
            conn.execute(
                resolution_inputs.insert().values(
                    job_id=job_id,
                    requirements=requirements,
                    constraints=constraints,
                    created_at=now,
                )
            )
        repository.record_event(
            conn, actor, "resolve", None, None, f"job {job_id} {platform.name} {key[:16]}"
        )
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().one()
    return Requested(jobs.job_json(row), reused=False)


def closure_finished(services: Services, job: dict[str, Any]) -> dict[str, Any]:
    """After a resolution succeeded: note the pages its pins came from, and queue a build of
    every pin pip would install from an sdist (as ``warm`` requests them)."""
    platform = services.platforms[job["platform"]]
    closure = (job.get("result") or {}).get("closure") or []
    pages: dict[str, str] = {}
    builds = []
    for pin in closure:
        if pin.get("direct"):
            continue
        fingerprint = page_fingerprint(services, platform, pin["name"])
        if fingerprint is not None:
            pages[pin["name"]] = fingerprint
        if pin.get("sdist") and not platform.retired:
            outcome = jobs.request_build(
                services, pin["name"], pin["version"], platform.name, "warm", job["requested_by"]
            )
            builds.append(outcome.__dict__)
    result = {**(job.get("result") or {}), "pages": pages, "builds": builds}
    with write_transaction(services.engine) as conn:
        conn.execute(
            update(build_jobs).where(build_jobs.c.id == job["id"]).values(result=json.dumps(result))
        )
    return {**job, "result": result}


def get_job_with_inputs(services: Services, job_id: int) -> dict[str, Any]:
    """A job with its log; a resolution's with its inputs too (JobNotFound if none)."""
    job = jobs.get_job(services, job_id, with_log=True)
    if job.get("kind") != KIND:
        return job
    with read_connection(services.engine) as conn:
        inputs = (
            conn.execute(select(resolution_inputs).where(resolution_inputs.c.job_id == job_id))
            .mappings()
            .first()
        )
    job["requirements"] = inputs["requirements"] if inputs else ""
    job["constraints"] = inputs["constraints"] if inputs else ""
    return job
