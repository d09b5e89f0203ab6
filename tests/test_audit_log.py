"""Every write is in the audit log once, with who made it; a refused write leaves nothing.

The write routes are read from the app's ``url_map`` (every POST/PUT/PATCH/DELETE outside
the worker protocol): each must have a case below, so a new route without one fails here.
Each case makes the write with a database token (or a console session of one) from its own
address and expects exactly one new event: the right action, the token's name as actor, its
id and owner, and the client's address. Its refusals (another owner, a missing scope, a
conflict, a bad body) must add no event at all. Runs on SQLite and on PostgreSQL (the
suite's second pass).
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, update
from werkzeug.test import TestResponse

from index_server import owners
from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import build_jobs, platform_states
from index_server.ingest import ingest_file
from index_server.jobs import request_build
from index_server.repository import EventFilter, list_events
from index_server.services import Services
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import PLATFORM, PY313_X86, bearer, services_fixture, sha256_of

NEW = PY313_X86  # a live platform to backfill
RETIRED = "ubuntu-22.04-py3.10-x86_64"  # retired: its files may be deleted
PROJECT = "audited-pkg"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
SHIPPED = Path(__file__).resolve().parent.parent / "platforms"


@dataclass(frozen=True)
class Token:
    id: int
    secret: str
    name: str
    owner: str


@dataclass
class Farm:
    app: Flask
    services: Services
    tmp: Path
    admin: Token
    uploader: Token
    reader: Token
    other_owner: Token  # an upload token of another team
    scoped: Token  # an upload token for other-* projects only
    file_id: int = 0  # the wheel uploaded first
    sdist_id: int = 0
    job_id: int = 0
    victim_token_id: int = 0
    addresses: int = 0
    sessions: dict[str, tuple[FlaskClient, str]] = field(default_factory=dict)

    def client(self) -> tuple[FlaskClient, str]:
        """A client with an address of its own, and that address."""
        self.addresses += 1
        address = f"192.0.2.{self.addresses}"
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client, address

    def call(
        self, method: str, path: str, token: Token | None = None, **kwargs: Any
    ) -> tuple[TestResponse, str]:
        client, address = self.client()
        headers = bearer(token.secret) if token else {}
        return client.open(path, method=method, headers=headers, **kwargs), address

    def console(self, token: Token) -> tuple[FlaskClient, str, str]:
        """A console session of ``token`` (its login is a write of its own: not counted)."""
        client, address = self.client()
        page = client.get("/console/login").get_data(as_text=True)
        csrf = _csrf(page)
        response = client.post("/console/login", data={"csrf_token": csrf, "token": token.secret})
        assert response.status_code == 302, response.get_data(as_text=True)
        return client, address, _csrf(client.get("/console/").get_data(as_text=True))


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:300]
    return found.group(1)


def _token(services: Services, name: str, scope: str, owner: str, **kw: Any) -> Token:
    token_id, secret = create_token(services.engine, name, scope, owner=owner, **kw)
    return Token(token_id, secret, f"token:{name}", owner)


@pytest.fixture
def farm(settings: Settings, tmp_path: Path) -> Iterator[Farm]:
    folder = tmp_path / "platforms"
    folder.mkdir()
    for name in (PLATFORM, NEW, RETIRED):
        text = (SHIPPED / f"{name}.toml").read_text()
        (folder / f"{name}.toml").write_text(("retired = true\n" if name == RETIRED else "") + text)
    live = dataclasses.replace(settings, platforms_dir=folder)
    for services in services_fixture(live):
        app = create_app(services=services)
        farm = Farm(
            app=app,
            services=services,
            tmp=tmp_path,
            admin=_token(services, "auditor", "admin", "ops"),
            uploader=_token(services, "team-a-ci", "upload", "team-a"),
            reader=_token(services, "reader", "read", "readers"),
            other_owner=_token(services, "team-b-ci", "upload", "team-b"),
            scoped=_token(services, "scoped", "upload", "team-c", projects=["other-*"]),
        )
        # The project already has its owner, so an upload is one event (a first upload
        # also records the claim: test_first_upload_records_the_claim_and_the_file).
        owners.add_owner(services, PROJECT, "team-a", "setup")
        # Files made as a worker's would be: two on the retired platform (deleted in one
        # action: two events), two binary wheels on PLATFORM (NEW's backfill: four jobs, four
        # events, each written in its job's transaction).
        for platform, name, tag in (
            (RETIRED, "old-pkg", "cp310-cp310-linux_x86_64"),
            (RETIRED, "older-pkg", "cp310-cp310-linux_x86_64"),
            (PLATFORM, "fast-lib", "cp311-cp311-linux_x86_64"),
            (PLATFORM, "faster-lib", "cp311-cp311-linux_x86_64"),
        ):
            wheel = make_wheel(tmp_path, name, "1.0", tag=tag)
            ingest_file(services, services.platforms[platform], wheel, wheel.name, actor="setup")
        # A build of NEW made on an image NEW no longer has: rebuild-stale queues it again.
        stale = request_build(services, "stale-lib", "1.0", NEW, "api", "setup").job_id
        with write_transaction(services.engine) as conn:
            conn.execute(
                update(build_jobs)
                .where(build_jobs.c.id == stale)
                .values(state="succeeded", platform_image_id="sha256:old")
            )
            conn.execute(
                insert(platform_states).values(
                    platform=NEW, first_seen=datetime.now(UTC), image_id="sha256:new"
                )
            )
        yield farm


def _last_id(farm: Farm) -> int:
    with read_connection(farm.services.engine) as conn:
        found = list_events(conn, 1)
    return int(found[0]["id"]) if found else 0  # type: ignore[call-overload]


def _since(farm: Farm, last: int) -> list[dict[str, Any]]:
    with read_connection(farm.services.engine) as conn:
        found = list_events(conn, 1000, EventFilter())
    return [e for e in found if int(e["id"]) > last]  # type: ignore[call-overload]


def _upload_form(path: Path) -> dict[str, Any]:
    return {
        "data": {
            ":action": "file_upload",
            "protocol_version": "1",
            "sha256_digest": sha256_of(path),
            "content": (io.BytesIO(path.read_bytes()), path.name),
        },
        "content_type": "multipart/form-data",
    }


def _id_of(farm: Farm, filename: str) -> int:
    response, _ = farm.call("GET", f"/api/projects/{PROJECT}", farm.admin)
    for f in response.get_json()["files"]:
        if f["filename"] == filename:
            return int(f["id"])
    raise AssertionError(f"{filename} is not listed: {response.get_json()}")


# === the cases ===============================================================================

# A write: (response, address, action, token); its refusals: responses that must add nothing.
Write = tuple[TestResponse, str, str, Token]
Refusals = list[TestResponse]


@dataclass(frozen=True)
class Case:
    method: str
    rule: str
    write: Callable[[Farm], Write]
    refusals: Callable[[Farm], Refusals]
    events: int = 1  # a batch (a platform's backfill, ...): one event per item it wrote


def upload_slash(farm: Farm) -> Write:
    wheel = make_wheel(farm.tmp, PROJECT, "1.0")
    response, address = farm.call(
        "POST", f"/{PLATFORM}/legacy/", farm.uploader, **_upload_form(wheel)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    farm.file_id = _id_of(farm, wheel.name)
    return response, address, "add (upload)", farm.uploader


def upload_refusals(farm: Farm) -> Refusals:
    other = farm.tmp / "other"
    other.mkdir(exist_ok=True)
    again = make_wheel(other, PROJECT, "1.0", requires=["changed"])  # same name, other bytes
    spelled = make_wheel(other, "Audited_Pkg", "1.0.0")  # the same release, spelled otherwise
    intruder = make_wheel(other, PROJECT, "9.0")
    return [
        farm.call("POST", f"/{PLATFORM}/legacy/", farm.uploader, **_upload_form(again))[0],
        farm.call("POST", f"/{PLATFORM}/legacy/", farm.uploader, **_upload_form(spelled))[0],
        farm.call("POST", f"/{PLATFORM}/legacy/", farm.other_owner, **_upload_form(intruder))[0],
        farm.call("POST", f"/{PLATFORM}/legacy/", farm.reader, **_upload_form(intruder))[0],
    ]


def upload_no_slash(farm: Farm) -> Write:
    sdist = make_sdist(farm.tmp, PROJECT, "1.0")
    response, address = farm.call(
        "POST", f"/{PLATFORM}/legacy", farm.uploader, **_upload_form(sdist)
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    farm.sdist_id = _id_of(farm, sdist.name)
    return response, address, "add (upload)", farm.uploader


def request_builds(farm: Farm) -> Write:
    body = {"project": PROJECT, "version": "2.0", "platforms": [NEW]}
    response, address = farm.call("POST", "/api/builds", farm.uploader, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    (outcome,) = response.get_json()["requests"]
    assert outcome["outcome"] == "queued", outcome
    farm.job_id = int(outcome["job_id"])
    return response, address, "build request", farm.uploader


def request_builds_refusals(farm: Farm) -> Refusals:
    body = {"project": PROJECT, "version": "3.0", "platforms": [NEW]}
    return [
        farm.call("POST", "/api/builds", farm.scoped, json=body)[0],
        farm.call("POST", "/api/builds", farm.reader, json=body)[0],
        farm.call("POST", "/api/builds", farm.uploader, json={**body, "version": "x y"})[0],
        farm.call("POST", "/api/builds", farm.uploader, json={**body, "platforms": [RETIRED]})[0],
    ]


def request_resolution(farm: Farm) -> Write:
    body = {"platform": NEW, "requirements": "audited-pkg>=1\n"}
    response, address = farm.call("POST", "/api/resolutions", farm.uploader, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["reused"] is False
    return response, address, "resolve", farm.uploader


def resolution_refusals(farm: Farm) -> Refusals:
    return [
        farm.call(
            "POST", "/api/resolutions", farm.uploader, json={"platform": NEW, "requirements": "!"}
        )[0],
        farm.call(
            "POST",
            "/api/resolutions",
            farm.reader,
            json={"platform": NEW, "requirements": "audited-pkg\n"},
        )[0],
    ]


def _admin_write(
    method: str, path: Callable[[Farm], str], action: str, body: Any = None, status: int = 200
) -> Callable[[Farm], Write]:
    def write(farm: Farm) -> Write:
        kwargs = {} if body is None else {"json": body}
        response, address = farm.call(method, path(farm), farm.admin, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return response, address, action, farm.admin

    return write


def _refused(*calls: tuple[str, Callable[[Farm], str], str, Any]) -> Callable[[Farm], Refusals]:
    """Each call: (method, path, who: 'admin'|'uploader'|'reader', JSON body or None)."""

    def refusals(farm: Farm) -> Refusals:
        found = []
        for method, path, who, body in calls:
            kwargs = {} if body is None else {"json": body}
            found.append(farm.call(method, path(farm), getattr(farm, who), **kwargs)[0])
        return found

    return refusals


def file_path(suffix: str = "") -> Callable[[Farm], str]:
    return lambda farm: f"/api/files/{farm.file_id}{suffix}"


def job_path(suffix: str) -> Callable[[Farm], str]:
    return lambda farm: f"/api/builds/{farm.job_id}{suffix}"


def fixed(path: str) -> Callable[[Farm], str]:
    return lambda farm: path


def create_token_write(farm: Farm) -> Write:
    body = {"name": "victim", "scope": "read", "owner": "team-v"}
    response, address = farm.call("POST", "/api/tokens", farm.admin, json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    farm.victim_token_id = int(response.get_json()["id"])
    return response, address, "token create", farm.admin


def backfill(farm: Farm) -> Write:
    response, address = farm.call("POST", f"/api/platforms/{NEW}/backfill", farm.admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    queued = sorted(q["project"] for q in response.get_json()["queued"])
    # every (project, version) with a binary wheel elsewhere: four jobs, an event each
    assert queued == ["fast-lib", "faster-lib", "old-pkg", "older-pkg"]
    return response, address, "build backfill", farm.admin


def delete_platform_files(farm: Farm) -> Write:
    response, address = farm.call("DELETE", f"/api/platforms/{RETIRED}/files", farm.admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["deleted"]) == 2  # two files: an event each
    return response, address, "delete", farm.admin


def console_job(action: str, form: dict[str, str]) -> Callable[[Farm], Write]:
    def write(farm: Farm) -> Write:
        client, address, csrf = farm.console(farm.admin)
        response = client.post(
            f"/console/builds/{farm.job_id}/{action}", data={"csrf_token": csrf, **form}
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        flashed = client.get(response.headers["Location"]).get_data(as_text=True)
        assert f"{action} done" in flashed, flashed[-2000:]
        return response, address, f"build {action}", farm.admin

    return write


def console_refusals(
    path: Callable[[Farm], str], form: dict[str, str]
) -> Callable[[Farm], Refusals]:
    def refusals(farm: Farm) -> Refusals:
        found = []
        for token in (farm.reader, farm.uploader):
            client, _address, csrf = farm.console(token)
            found.append(client.post(path(farm), data={"csrf_token": csrf, **form}))
        client, _address, csrf = farm.console(farm.admin)
        found.append(client.post(path(farm), data={"csrf_token": "x" + csrf, **form}))
        return found

    return refusals


def console_owner(suffix: str, owner: str, action: str) -> Callable[[Farm], Write]:
    def write(farm: Farm) -> Write:
        client, address, csrf = farm.console(farm.admin)
        response = client.post(
            f"/console/projects/{PROJECT}/{suffix}", data={"csrf_token": csrf, "owner": owner}
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        return response, address, action, farm.admin

    return write


def console_login(farm: Farm) -> Write:
    client, address = farm.client()
    csrf = _csrf(client.get("/console/login").get_data(as_text=True))
    response = client.post("/console/login", data={"csrf_token": csrf, "token": farm.admin.secret})
    assert response.status_code == 302
    return response, address, "console login", farm.admin


def console_login_refusals(farm: Farm) -> Refusals:
    client, _ = farm.client()
    csrf = _csrf(client.get("/console/login").get_data(as_text=True))
    return [
        client.post("/console/login", data={"csrf_token": csrf, "token": "wf_nonsense"}),
        client.post("/console/login", data={"csrf_token": "x", "token": farm.admin.secret}),
    ]


def console_logout(farm: Farm) -> Write:
    client, address, csrf = farm.console(farm.admin)
    response = client.post("/console/logout", data={"csrf_token": csrf})
    assert response.status_code == 302
    return response, address, "console logout", farm.admin


def console_logout_refusals(farm: Farm) -> Refusals:
    client, _address, _csrf_token = farm.console(farm.admin)
    anonymous, _ = farm.client()
    return [
        client.post("/console/logout", data={"csrf_token": "wrong"}),
        anonymous.post("/console/logout"),
    ]


def nothing(farm: Farm) -> Refusals:
    return []


# In the order they run: each may use what the ones before made.
CASES = [
    Case("POST", "/<platform>/legacy/", upload_slash, upload_refusals),
    Case("POST", "/<platform>/legacy", upload_no_slash, nothing),
    Case("POST", "/api/builds", request_builds, request_builds_refusals),
    Case("POST", "/api/resolutions", request_resolution, resolution_refusals),
    Case(
        "POST",
        "/api/files/<int:file_id>/yank",
        _admin_write("POST", file_path("/yank"), "yank", {"reason": "broken"}),
        _refused(
            ("POST", file_path("/yank"), "uploader", {"reason": "x"}),
            ("POST", file_path("/yank"), "admin", {"reason": 5}),
            ("POST", fixed("/api/files/999999/yank"), "admin", {"reason": "x"}),
        ),
    ),
    Case(
        "POST",
        "/api/files/<int:file_id>/unyank",
        _admin_write("POST", file_path("/unyank"), "unyank"),
        _refused(("POST", file_path("/unyank"), "reader", None)),
    ),
    Case(
        "POST",
        "/api/tokens",
        create_token_write,
        _refused(
            ("POST", fixed("/api/tokens"), "admin", {"name": "victim", "scope": "read"}),
            ("POST", fixed("/api/tokens"), "admin", {"name": "x", "scope": "emperor"}),
            ("POST", fixed("/api/tokens"), "uploader", {"name": "y", "scope": "admin"}),
        ),
    ),
    Case(
        "DELETE",
        "/api/tokens/<int:token_id>",
        _admin_write("DELETE", lambda f: f"/api/tokens/{f.victim_token_id}", "token revoke"),
        _refused(
            ("DELETE", lambda f: f"/api/tokens/{f.victim_token_id}", "admin", None),
            ("DELETE", lambda f: f"/api/tokens/{f.reader.id}", "uploader", None),
        ),
    ),
    Case(
        "POST",
        "/api/builds/<int:job_id>/cancel",
        _admin_write("POST", job_path("/cancel"), "build cancel", {"reason": "not now"}),
        _refused(
            ("POST", job_path("/cancel"), "admin", {"reason": "again"}),  # 409: cancelled
            ("POST", job_path("/cancel"), "uploader", {"reason": "x"}),
        ),
    ),
    Case(
        "POST",
        "/api/builds/<int:job_id>/rebuild",
        _admin_write("POST", job_path("/rebuild"), "build rebuild"),
        _refused(("POST", job_path("/rebuild"), "admin", None)),  # 409: queued already
    ),
    Case(
        "POST",
        "/api/builds/<int:job_id>/skip",
        _admin_write("POST", job_path("/skip"), "build skip", {"reason": "known broken"}),
        _refused(
            ("POST", job_path("/skip"), "admin", {}),  # no reason
            ("POST", job_path("/skip"), "admin", {"reason": "again"}),  # 409: skipped
        ),
    ),
    Case(
        "POST",
        "/api/skips",
        _admin_write(
            "POST", fixed("/api/skips"), "skip", {"project": "bad-pkg", "reason": "r"}, 201
        ),
        _refused(
            ("POST", fixed("/api/skips"), "admin", {"project": "bad-pkg"}),
            ("POST", fixed("/api/skips"), "uploader", {"project": "bad-pkg", "reason": "r"}),
        ),
    ),
    Case(
        "DELETE",
        "/api/skips/<project>",
        _admin_write("DELETE", fixed("/api/skips/bad-pkg"), "unskip"),
        _refused(("DELETE", fixed("/api/skips/bad-pkg"), "admin", None)),  # 404: gone
    ),
    Case(
        "PUT",
        "/api/build-settings/<project>",
        _admin_write(
            "PUT", fixed(f"/api/build-settings/{PROJECT}"), "build settings", {"env": {"A": "1"}}
        ),
        _refused(
            ("PUT", fixed(f"/api/build-settings/{PROJECT}"), "admin", {"env": "A=1"}),
            ("PUT", fixed(f"/api/build-settings/{PROJECT}"), "admin", {"nonsense": 1}),
            ("PUT", fixed(f"/api/build-settings/{PROJECT}"), "uploader", {"env": {}}),
        ),
    ),
    Case(
        "POST",
        "/api/platforms/<platform>/backfill",
        backfill,
        _refused(
            ("POST", fixed(f"/api/platforms/{RETIRED}/backfill"), "admin", None),  # 409
            ("POST", fixed("/api/platforms/no-such-platform/backfill"), "admin", None),
        ),
        events=4,
    ),
    Case(
        "POST",
        "/api/platforms/<platform>/rebuild-stale",
        _admin_write("POST", fixed(f"/api/platforms/{NEW}/rebuild-stale"), "build rebuild"),
        _refused(("POST", fixed(f"/api/platforms/{NEW}/rebuild-stale"), "uploader", None)),
    ),
    Case(
        "DELETE",
        "/api/platforms/<platform>/files",
        delete_platform_files,
        _refused(("DELETE", fixed(f"/api/platforms/{NEW}/files"), "admin", None)),  # 409
        events=2,
    ),
    Case(
        "POST",
        "/api/tracked",
        _admin_write("POST", fixed("/api/tracked"), "track", {"project": "Watched.Pkg"}, 201),
        _refused(
            ("POST", fixed("/api/tracked"), "admin", {"project": ""}),
            ("POST", fixed("/api/tracked"), "reader", {"project": "watched-pkg"}),
        ),
    ),
    Case(
        "DELETE",
        "/api/tracked/<project>",
        _admin_write("DELETE", fixed("/api/tracked/watched-pkg"), "untrack"),
        _refused(("DELETE", fixed("/api/tracked/watched-pkg"), "admin", None)),  # 404
    ),
    Case(
        "POST",
        "/api/projects/<name>/owners",
        _admin_write(
            "POST", fixed(f"/api/projects/{PROJECT}/owners"), "owner add", {"owner": "team-c"}, 201
        ),
        _refused(
            ("POST", fixed(f"/api/projects/{PROJECT}/owners"), "admin", {"owner": ""}),
            ("POST", fixed(f"/api/projects/{PROJECT}/owners"), "uploader", {"owner": "team-x"}),
        ),
    ),
    Case(
        "DELETE",
        "/api/projects/<name>/owners/<owner>",
        _admin_write("DELETE", fixed(f"/api/projects/{PROJECT}/owners/team-c"), "owner remove"),
        _refused(
            ("DELETE", fixed(f"/api/projects/{PROJECT}/owners/team-c"), "admin", None),  # 404
            ("DELETE", fixed(f"/api/projects/{PROJECT}/owners/team-a"), "uploader", None),
        ),
    ),
    Case(
        "POST",
        "/console/builds/<int:job_id>/rebuild",
        console_job("rebuild", {}),
        console_refusals(lambda f: f"/console/builds/{f.job_id}/rebuild", {}),
    ),
    Case(
        "POST",
        "/console/builds/<int:job_id>/cancel",
        console_job("cancel", {"reason": "later"}),
        console_refusals(lambda f: f"/console/builds/{f.job_id}/cancel", {"reason": "x"}),
    ),
    Case(
        "POST",
        "/console/builds/<int:job_id>/skip",
        console_job("skip", {"reason": "never"}),
        console_refusals(lambda f: f"/console/builds/{f.job_id}/skip", {"reason": "x"}),
    ),
    Case(
        "POST",
        "/console/projects/<name>/owners",
        console_owner("owners", "team-d", "owner add"),
        console_refusals(fixed(f"/console/projects/{PROJECT}/owners"), {"owner": "team-x"}),
    ),
    Case(
        "POST",
        "/console/projects/<name>/owners/remove",
        console_owner("owners/remove", "team-d", "owner remove"),
        console_refusals(fixed(f"/console/projects/{PROJECT}/owners/remove"), {"owner": "team-a"}),
    ),
    Case("POST", "/console/login", console_login, console_login_refusals),
    Case("POST", "/console/logout", console_logout, console_logout_refusals),
    Case(
        "DELETE",
        "/api/files/<int:file_id>",
        _admin_write("DELETE", lambda f: f"/api/files/{f.sdist_id}", "delete"),
        _refused(
            ("DELETE", lambda f: f"/api/files/{f.sdist_id}", "admin", None),  # 404: gone
            ("DELETE", file_path(), "uploader", None),
        ),
    ),
]


def _write_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method in MUTATING and not rule.rule.startswith("/api/worker/")
    }


def test_every_write_route_has_a_case(farm: Farm) -> None:
    cases = [(c.method, c.rule) for c in CASES]
    assert len(cases) == len(set(cases))
    routes = _write_routes(farm.app)
    assert not routes - set(cases), f"write routes without an audit case: {routes - set(cases)}"
    assert not set(cases) - routes, f"cases for routes the app lacks: {set(cases) - routes}"


def test_every_write_is_audited_once_with_its_actor_and_refusals_leave_nothing(
    farm: Farm,
) -> None:
    for case in CASES:
        where = f"{case.method} {case.rule}"
        # A console case's own login is an event of its own: leave it out of the count.
        last = _last_id(farm)
        response, address, action, token = case.write(farm)
        assert response.status_code < 400, where
        new = [e for e in _since(farm, last) if e["action"] != "console login"]
        if action == "console login":
            new = _since(farm, last)
        assert len(new) == case.events, (where, [(e["action"], e["detail"]) for e in new])
        for event in new:
            assert event["action"] == action, where
            assert event["actor"] == token.name, where
            assert (event["token_id"], event["owner"]) == (token.id, token.owner), where
            assert event["address"] == address, where

        before = _last_id(farm)
        for refused in case.refusals(farm):
            assert 400 <= refused.status_code < 500, (where, refused.status_code)
            assert refused.status_code != 401, where  # a refusal after authentication
        leftovers = [e for e in _since(farm, before) if e["action"] != "console login"]
        assert leftovers == [], (where, leftovers)


def test_refused_writes_answer_403_409_and_422_and_record_nothing(farm: Farm) -> None:
    """The refusals the issue names, each seen with its status: another owner's upload
    (403), the same release again with other bytes (409), a bad owner body (422)."""
    upload_slash(farm)
    last = _last_id(farm)
    other = farm.tmp / "refused"
    other.mkdir()
    intruder = make_wheel(other, PROJECT, "9.0")
    changed = make_wheel(other, PROJECT, "1.0", requires=["changed"])
    response, _ = farm.call(
        "POST", f"/{PLATFORM}/legacy/", farm.other_owner, **_upload_form(intruder)
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    response, _ = farm.call("POST", f"/{PLATFORM}/legacy/", farm.uploader, **_upload_form(changed))
    assert response.status_code == 409, response.get_data(as_text=True)
    response, _ = farm.call(
        "POST", f"/api/projects/{PROJECT}/owners", farm.admin, json={"owner": 7}
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    response, _ = farm.call(
        "POST", "/api/tokens", farm.admin, json={"name": "reader", "scope": "read"}
    )
    assert response.status_code == 409, response.get_data(as_text=True)  # name taken
    assert _since(farm, last) == []


def test_first_upload_records_the_claim_and_the_file(farm: Farm) -> None:
    """A new name's first upload is two writes: the owner it gets, and the file."""
    last = _last_id(farm)
    wheel = make_wheel(farm.tmp, "brand-new", "0.1")
    response, address = farm.call(
        "POST", f"/{PLATFORM}/legacy/", farm.uploader, **_upload_form(wheel)
    )
    assert response.status_code == 201
    events = _since(farm, last)
    assert [(e["action"], e["project"]) for e in reversed(events)] == [
        ("owner add", "brand-new"),
        ("add (upload)", "brand-new"),
    ]
    assert events[1]["detail"] == "team-a (first upload)"
    for event in events:
        assert (event["token_id"], event["owner"], event["address"]) == (
            farm.uploader.id,
            "team-a",
            address,
        )
