"""The console's pages under /console/: thin views over ``queries`` and ``jobs``."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from packaging.utils import canonicalize_name
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from index_server import audit, jobs, owners
from index_server.auth import Identity
from index_server.console import queries, security
from index_server.views.builds_api import STATES
from index_server.views.common import error_response, services, valid_name

bp = Blueprint("console", __name__, url_prefix="/console")

ACTIONS_ALLOWED = {
    "rebuild": ("succeeded", "failed", "skipped", "cancelled"),
    "cancel": jobs.ACTIVE_STATES,
    "skip": ("queued", "failed", "cancelled"),
}


def user() -> Identity | None:
    return security.current_user(services())


@bp.app_context_processor
def _context() -> dict[str, object]:
    # Only the console's templates use these; csrf_token is a function, so a page that
    # shows no form starts no session.
    return {"console_user": user, "csrf_token": security.csrf_token, "CSRF": security.CSRF_FIELD}


def _safe_next(target: str | None) -> str:
    """Only a path on this console: never an open redirect to another site."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/console/"):
            return target
    return url_for("console.dashboard")


@bp.before_request
def _read_policy() -> BaseResponse | None:
    if request.endpoint in ("console.login", "console.logout"):
        return None
    if services().settings.read_requires_token and user() is None:
        if request.endpoint == "console.build_log":
            abort(401, "log in to read the console")
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


@bp.errorhandler(HTTPException)
def _error(exc: HTTPException) -> tuple[str, int] | Response:
    if request.endpoint == "console.build_log":
        return error_response(exc)  # plain text, like the rest of the API
    return render_template("console_error.html", error=exc), exc.code or 500


@bp.get("/")
def dashboard() -> str:
    svc = services()
    return render_template(
        "console_dashboard.html",
        queue=queries.queue_by_platform(svc),
        workers=jobs.list_workers(svc),
        throughput=queries.throughput(svc),
        failures=queries.recent_jobs(svc, "failed", limit=15),
        recent=queries.recent_jobs(svc, limit=15),
    )


@bp.get("/projects")
def projects() -> str:
    query = request.args.get("q", "")
    hits, more = queries.search_projects(services(), query)
    return render_template("console_projects.html", query=query, hits=hits, more=more)


@bp.get("/projects/<name>")
def project(name: str) -> str | BaseResponse:
    canonical = canonicalize_name(name)
    if canonical != name:
        return redirect(url_for("console.project", name=canonical), 301)
    matrix = queries.project_matrix(services(), canonical)
    if matrix is None:
        abort(404, f"no project {canonical!r} here: nothing uploaded, built or queued")
    return render_template("console_project.html", m=matrix)


def _owner_action(name: str) -> tuple[Identity, str] | BaseResponse:
    """The admin and the project of an owners form, or the answer to give instead."""
    project = canonicalize_name(name)
    who = _admin_post(url_for("console.project", name=project))
    if not isinstance(who, Identity):
        return who
    if not valid_name(name):
        abort(404, f"{name!r} is not a valid project name")
    return who, project


def _owner_field() -> str:
    owner = request.form.get("owner", "").strip()
    if not owner or len(owner) > 200:
        abort(400, "the owner must be a name of 1 to 200 characters")
    return owner


def _change_owner(name: str, add: bool) -> BaseResponse:
    """An admin's add or remove form on a project's page; back to its owners section."""
    checked = _owner_action(name)
    if not isinstance(checked, tuple):
        return checked
    who, project = checked
    owner = _owner_field()
    if add:
        done = owners.add_owner(services(), project, owner, who.name)
        message = f"{owner} {'is now' if done else 'was already'} an owner of {project}."
        flash(message, "ok")
    elif owners.remove_owner(services(), project, owner, who.name):
        flash(f"{owner} is no longer an owner of {project}.", "ok")
    else:
        flash(f"Not done: {owner} is not an owner of {project}.", "error")
    return redirect(url_for("console.project", name=project) + "#owners")


@bp.post("/projects/<name>/owners")
def add_owner(name: str) -> BaseResponse:
    return _change_owner(name, add=True)


@bp.post("/projects/<name>/owners/remove")
def remove_owner(name: str) -> BaseResponse:
    return _change_owner(name, add=False)


@bp.get("/audit")
def audit_log() -> str | BaseResponse:
    """The audit log for admins: the API's filters (``audit.filter_from_args``), paged."""
    who = user()
    if who is None:
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    if not who.allows("admin"):
        abort(403, f"token scope {who.scope!r} may not read the audit log")
    try:
        where = audit.filter_from_args(request.args)
    except audit.BadFilter as exc:
        abort(400, str(exc))
    page = queries.audit_page(services(), where)
    kept = {k: request.args[k] for k in audit.FILTER_KEYS if request.args.get(k)}
    return render_template("console_audit.html", page=page, filters=kept)


@bp.get("/builds")
def builds() -> str:
    state = request.args.get("state") or None
    platform = request.args.get("platform") or None
    project = request.args.get("project") or None
    if state and state not in STATES:
        abort(400, f"'state' must be one of {', '.join(STATES)}")
    found = jobs.list_jobs(
        services(), state, platform, canonicalize_name(project) if project else None, 200
    )
    return render_template(
        "console_builds.html",
        builds=found,
        states=STATES,
        platforms=sorted(services().platforms),
        state=state,
        platform=platform,
        project=project,
    )


@bp.get("/builds/<int:job_id>")
def build(job_id: int) -> str:
    try:
        page = queries.build_page(services(), job_id)
    except jobs.JobNotFound:
        abort(404, f"no build {job_id}")
    return render_template("console_build.html", b=page, job=page.job, allowed=ACTIONS_ALLOWED)


@bp.get("/builds/<int:job_id>/log.json")
def build_log(job_id: int) -> Response:
    try:
        offset = int(request.args.get("offset", "0"))
    except ValueError:
        abort(400, "'offset' must be a number")
    chunk = queries.log_since(services(), job_id, offset)
    if chunk is None:
        abort(404, f"no build {job_id}")
    response = jsonify(chunk)
    response.headers["Cache-Control"] = "no-store"
    return response


def _admin_post(back: str) -> Identity | BaseResponse:
    """The admin behind a POST with a valid CSRF token, or the answer to give instead."""
    if not security.csrf_ok(request.form.get(security.CSRF_FIELD)):
        abort(400, "the form's CSRF token is missing or wrong: reload the page and try again")
    if any("\x00" in value for value in request.form.values()):
        abort(400, "NUL characters are not allowed")
    who = user()
    if who is None:
        flash("Log in with an admin token first.", "error")
        return redirect(url_for("console.login", next=back))
    if not who.allows("admin"):
        abort(403, f"token scope {who.scope!r} does not allow admin actions")
    return who


def _job_action(job_id: int, action: str) -> BaseResponse:
    who = _admin_post(url_for("console.build", job_id=job_id))
    if not isinstance(who, Identity):
        return who
    svc = services()
    try:
        if action == "rebuild":
            jobs.rebuild(svc, job_id, who.name)
        elif action == "cancel":
            jobs.cancel(svc, job_id, who.name, request.form.get("reason", "").strip() or None)
        else:
            reason = request.form.get("reason", "").strip()
            if not reason:
                flash("Say why the build is skipped.", "error")
                return redirect(url_for("console.build", job_id=job_id))
            jobs.skip_job(svc, job_id, who.name, reason)
    except jobs.JobNotFound:
        abort(404, f"no build {job_id}")
    except jobs.JobError as exc:
        flash(f"Not done: {exc}.", "error")
    else:
        security.log.info(
            "console %s", action, extra={"event": f"build_{action}", "job_id": job_id}
        )
        flash(f"Build {job_id}: {action} done.", "ok")
    return redirect(url_for("console.build", job_id=job_id))


@bp.post("/builds/<int:job_id>/rebuild")
def rebuild(job_id: int) -> BaseResponse:
    return _job_action(job_id, "rebuild")


@bp.post("/builds/<int:job_id>/cancel")
def cancel(job_id: int) -> BaseResponse:
    return _job_action(job_id, "cancel")


@bp.post("/builds/<int:job_id>/skip")
def skip(job_id: int) -> BaseResponse:
    return _job_action(job_id, "skip")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int]:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("console_login.html", next=target)
    if not security.csrf_ok(request.form.get(security.CSRF_FIELD)):
        abort(400, "the form's CSRF token is missing or wrong: reload the page and try again")
    who = security.log_in(services(), request.form.get("token", ""))
    if who is None:
        flash("That token is unknown, revoked, or may not read.", "error")
        return render_template("console_login.html", next=target), 403
    flash(f"Logged in as {who.name} ({who.scope}).", "ok")
    return redirect(target)


@bp.post("/logout")
def logout() -> BaseResponse:
    if not security.csrf_ok(request.form.get(security.CSRF_FIELD)):
        abort(400, "the form's CSRF token is missing or wrong: reload the page and try again")
    security.log_out(services())
    flash("Logged out.", "ok")
    return redirect(url_for("console.dashboard"))
