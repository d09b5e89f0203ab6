"""The console's owners section and its audit log page, over HTTP (Flask's test client).

A project's page lists its owners; an admin's session adds and removes them with the
form's CSRF token, each change one audit event naming the admin's token, owner and
address; other sessions get a 403 and change nothing. ``/console/audit`` is for admins:
the API's filters (action prefix, project, actor, token, since/until) and paging, the same
events as ``GET /api/events``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from bs4 import BeautifulSoup, Tag
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from client.cli import main
from index_server.auth import create_token
from index_server.owners import list_owners
from index_server.services import Services
from tests.factory import make_wheel
from tests.http_helpers import admin_headers, bearer, upload_ok

ADDRESS = "198.51.100.7"


def client_from(app: Flask, address: str = ADDRESS) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def soup_of(client: FlaskClient, path: str, status: int = 200) -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[:300])
    return BeautifulSoup(response.text, "html.parser")


def csrf_of(soup: BeautifulSoup) -> str:
    field = soup.find("input", attrs={"name": "csrf_token"})
    assert isinstance(field, Tag)
    return str(field["value"])


def log_in(client: FlaskClient, secret: str) -> str:
    """Log the client's session in; its CSRF token."""
    token = csrf_of(soup_of(client, "/console/login"))
    response = client.post("/console/login", data={"csrf_token": token, "token": secret})
    assert response.status_code == 302, response.text[:300]
    return csrf_of(soup_of(client, "/console/"))


def api_events(client: FlaskClient, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/events{query}", headers=admin_headers())
    assert response.status_code == 200, response.text
    return response.get_json()  # type: ignore[no-any-return]


def owner_names(services: Services, project: str) -> list[str]:
    return [str(o["owner"]) for o in list_owners(services, project)]


def event_ids(soup: BeautifulSoup) -> list[int]:
    table = soup.find(id="events")
    if table is None:
        return []
    return [int(str(row["data-id"])) for row in table.find_all("tr", attrs={"data-id": True})]


@pytest.fixture
def hosted(app: Flask, services: Services, tmp_path: Path) -> str:
    """demo-pkg, uploaded by a token of team-a (which the upload made its owner)."""
    secret = create_token(services.engine, "uploader", "upload", owner="team-a")[1]
    upload_ok(client_from(app), make_wheel(tmp_path, "demo-pkg", "1.0"), secret)
    assert owner_names(services, "demo-pkg") == ["team-a"]
    return "demo-pkg"


@pytest.fixture
def admin_token(services: Services) -> tuple[int, str]:
    return create_token(services.engine, "alice-admin", "admin", owner="ops")


def test_the_project_page_shows_its_owners_and_only_admins_get_the_forms(
    app: Flask, services: Services, hosted: str
) -> None:
    anonymous = client_from(app)
    soup = soup_of(anonymous, f"/console/projects/{hosted}")
    owners = soup.find(id="owner-list")
    assert isinstance(owners, Tag)
    assert [str(r["data-owner"]) for r in owners.find_all("tr", attrs={"data-owner": True})] == [
        "team-a"
    ]
    assert "uploader" in owners.get_text()  # who added it: the first upload's token
    assert soup.find(id="add-owner") is None and not soup.select(".remove-owner")
    reader = client_from(app)
    log_in(reader, create_token(services.engine, "reader", "read")[1])
    soup = soup_of(reader, f"/console/projects/{hosted}")
    assert soup.find(id="add-owner") is None and not soup.select(".remove-owner")
    assert soup.find(id="nav-audit") is None  # the audit log is no reader's link


def test_an_admin_adds_and_removes_owners_and_each_change_is_audited(
    app: Flask, services: Services, hosted: str, admin_token: tuple[int, str]
) -> None:
    token_id, secret = admin_token
    admin = client_from(app)
    csrf = log_in(admin, secret)
    soup = soup_of(admin, f"/console/projects/{hosted}")
    assert isinstance(soup.find(id="add-owner"), Tag)
    assert isinstance(soup.find(id="nav-audit"), Tag)
    before = api_events(admin, "?action=owner*")["events"]

    response = admin.post(
        f"/console/projects/{hosted}/owners",
        data={"csrf_token": csrf, "owner": "  team-b  "},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "team-b is now an owner of demo-pkg." in response.text
    assert owner_names(services, hosted) == ["team-a", "team-b"]
    soup = BeautifulSoup(response.text, "html.parser")
    assert soup.find("tr", attrs={"data-owner": "team-b"}) is not None

    # Adding again changes nothing and records nothing.
    response = admin.post(
        f"/console/projects/{hosted}/owners",
        data={"csrf_token": csrf, "owner": "team-b"},
        follow_redirects=True,
    )
    assert "team-b was already an owner" in response.text

    response = admin.post(
        f"/console/projects/{hosted}/owners/remove",
        data={"csrf_token": csrf, "owner": "team-a"},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/console/projects/{hosted}#owners")
    assert owner_names(services, hosted) == ["team-b"]
    # Removing one who is not an owner: said so, nothing recorded.
    response = admin.post(
        f"/console/projects/{hosted}/owners/remove",
        data={"csrf_token": csrf, "owner": "nobody"},
        follow_redirects=True,
    )
    assert "Not done: nobody is not an owner of demo-pkg." in response.text

    events = api_events(admin, "?action=owner*")["events"]
    new = events[: len(events) - len(before)]
    assert [(e["action"], e["detail"]) for e in new] == [
        ("owner remove", "team-a"),
        ("owner add", "team-b"),
    ]
    for event in new:
        assert event["project"] == hosted
        assert (event["actor"], event["token_id"], event["owner"]) == (
            "token:alice-admin",
            token_id,
            "ops",
        )
        assert event["address"] == ADDRESS


@pytest.mark.parametrize(
    ("form", "with_csrf"),
    [
        ({"owner": "team-x"}, False),
        ({"owner": "team-x", "csrf_token": "forged"}, False),
        ({"owner": ""}, True),
        ({"owner": "   "}, True),
        ({"owner": "x" * 201}, True),
        ({"owner": "team\x00x"}, True),
    ],
    ids=["no-csrf", "forged-csrf", "empty", "blank", "too-long", "nul"],
)
def test_bad_owner_forms_are_refused_and_store_nothing(
    app: Flask,
    services: Services,
    hosted: str,
    admin_token: tuple[int, str],
    form: dict[str, str],
    with_csrf: bool,
) -> None:
    admin = client_from(app)
    csrf = log_in(admin, admin_token[1])
    if with_csrf:
        form = {**form, "csrf_token": csrf}
    count = len(api_events(admin)["events"])
    for path in (f"/console/projects/{hosted}/owners", f"/console/projects/{hosted}/owners/remove"):
        response = admin.post(path, data=form)
        assert response.status_code == 400, (path, response.status_code)
    assert owner_names(services, hosted) == ["team-a"]
    assert len(api_events(admin)["events"]) == count


def test_non_admin_sessions_may_not_change_owners(
    app: Flask, services: Services, hosted: str
) -> None:
    before = api_events(app.test_client(), "?action=owner*")["events"]
    for scope in ("read", "upload", "build"):
        client = client_from(app)
        csrf = log_in(client, create_token(services.engine, f"a-{scope}", scope, owner="team-a")[1])
        for path, owner in (("owners", "team-x"), ("owners/remove", "team-a")):
            response = client.post(
                f"/console/projects/{hosted}/{path}", data={"csrf_token": csrf, "owner": owner}
            )
            assert response.status_code == 403, (scope, path)
            assert "does not allow admin actions" in response.text
    # No session at all: to the login form, nothing done.
    response = client_from(app).post(f"/console/projects/{hosted}/owners", data={"owner": "team-x"})
    assert response.status_code == 400  # the CSRF check comes first
    assert owner_names(services, hosted) == ["team-a"]
    assert api_events(app.test_client(), "?action=owner*")["events"] == before


def _make_events(client: FlaskClient, secret: str) -> None:
    """30 skips and their removals (60 events by ``token:skipper``), 3 build settings."""
    for n in range(30):
        response = client.post(
            "/api/skips", json={"project": f"proj-{n}", "reason": "r"}, headers=bearer(secret)
        )
        assert response.status_code == 201, response.text
        assert client.delete(f"/api/skips/proj-{n}", headers=bearer(secret)).status_code == 200
    for n in range(3):
        response = client.put(
            "/api/build-settings/proj-1", json={"env": {"N": str(n)}}, headers=admin_headers()
        )
        assert response.status_code == 200, response.text


def test_the_audit_page_filters_and_pages_like_the_api(
    app: Flask, services: Services, admin_token: tuple[int, str]
) -> None:
    skipper_id, skipper = create_token(services.engine, "skipper", "admin", owner="ops")
    api = client_from(app, "203.0.113.9")
    _make_events(api, skipper)
    admin = client_from(app)
    log_in(admin, admin_token[1])

    # Everything, newest first, 50 a page; "older" pages on with the filters kept.
    everything = api_events(admin, "?limit=1000")["events"]
    assert len(everything) > 60
    soup = soup_of(admin, "/console/audit")
    first = event_ids(soup)
    assert first == [e["id"] for e in everything[:50]]
    assert first == sorted(first, reverse=True)
    row = soup.find("tr", attrs={"data-id": str(everything[0]["id"])})
    assert isinstance(row, Tag) and "console login" in row.get_text()
    assert "alice-admin" in row.get_text() and ADDRESS in row.get_text()
    older = soup.find(id="older")
    assert isinstance(older, Tag)
    second = event_ids(soup_of(admin, str(older["href"])))
    assert second == [e["id"] for e in everything[50:100]]

    # By actor, paged: 60 events, pages of 50 then 10, none twice.
    soup = soup_of(admin, "/console/audit?actor=token:skipper")
    page1 = event_ids(soup)
    older = soup.find(id="older")
    assert isinstance(older, Tag) and "actor=token:skipper" in str(older["href"])
    page2_soup = soup_of(admin, str(older["href"]))
    page2 = event_ids(page2_soup)
    assert (len(page1), len(page2)) == (50, 10)
    assert page2_soup.find(id="older") is None
    api_skipper = api_events(admin, "?actor=token:skipper&limit=1000")["events"]
    assert page1 + page2 == [e["id"] for e in api_skipper]
    assert all(e["token_id"] == skipper_id and e["address"] == "203.0.113.9" for e in api_skipper)

    # Only filters go into the paging link: no url_for options from the query string.
    soup = soup_of(admin, "/console/audit?actor=token:skipper&_external=1&_scheme=javascript")
    older = soup.find(id="older")
    assert isinstance(older, Tag)
    assert str(older["href"]).startswith("/console/audit?") and "javascript" not in str(older)

    # By token id, by action (exact and a prefix), by project.
    by_token = event_ids(soup_of(admin, f"/console/audit?token_id={skipper_id}&before=999999"))
    assert by_token == page1
    assert len(event_ids(soup_of(admin, "/console/audit?action=unskip"))) == 30
    settings = event_ids(soup_of(admin, "/console/audit?action=build*"))
    assert len(settings) == 3
    assert settings == [e["id"] for e in api_events(admin, "?action=build*")["events"]]
    assert event_ids(soup_of(admin, "/console/audit?action=build")) == []  # exact: no such
    proj1 = event_ids(soup_of(admin, "/console/audit?project=Proj_1"))
    assert proj1 == [e["id"] for e in api_events(admin, "?project=proj-1")["events"]]
    assert len(proj1) == 5  # skip, unskip, three build settings

    # since/until, inclusive, by the events' own times.
    middle = api_skipper[30]
    at = middle["at"]
    since = event_ids(soup_of(admin, f"/console/audit?actor=token:skipper&since={quote(at)}"))
    until = event_ids(soup_of(admin, f"/console/audit?actor=token:skipper&until={quote(at)}"))
    # typed into a URL unencoded, the offset's "+" is a space: still understood
    assert event_ids(soup_of(admin, f"/console/audit?actor=token:skipper&until={at}")) == until
    assert middle["id"] in since and middle["id"] in until
    assert min(since) >= middle["id"] >= max(until)
    assert set(since) | set(until) == set(page1 + page2)
    api_until = api_events(admin, f"?actor=token:skipper&until={quote(at)}&limit=1000")["events"]
    assert until == [e["id"] for e in api_until][:50]
    soup = soup_of(admin, "/console/audit?actor=token:skipper&until=2000-01-01")
    assert event_ids(soup) == [] and soup.find(id="no-events") is not None
    # the form shows the filters in use
    field = soup.find("input", attrs={"name": "until"})
    assert isinstance(field, Tag) and field["value"] == "2000-01-01"

    # Bad filters: a clear 400 page (the API's 422).
    for query, word in (
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("token_id=abc", "token_id"),
        ("before=-1", "before"),
    ):
        response = admin.get(f"/console/audit?{query}")
        assert response.status_code == 400, query
        assert f"&#39;{word}&#39;" in response.text or f"'{word}'" in response.text, query
        api_answer = admin.get(f"/api/events?{query}", headers=admin_headers())
        assert api_answer.status_code == 422, query


def test_the_audit_page_is_for_admins_only(
    app: Flask, services: Services, admin_token: tuple[int, str]
) -> None:
    anonymous = client_from(app)
    response = anonymous.get("/console/audit?action=owner*")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login?next=/console/audit")
    for scope in ("read", "upload", "build"):
        client = client_from(app)
        log_in(client, create_token(services.engine, f"n-{scope}", scope)[1])
        response = client.get("/console/audit")
        assert response.status_code == 403, scope
        assert "may not read the audit log" in response.text
        assert "console login" not in response.text
    admin = client_from(app)
    log_in(admin, admin_token[1])
    assert admin.get("/console/audit").status_code == 200


def test_the_api_and_cli_until_filter(
    app: Flask, services: Services, admin_token: tuple[int, str]
) -> None:
    """``until`` is inclusive, takes an offset (compared in UTC) and pages like the rest."""
    client = client_from(app)
    _make_events(client, admin_token[1])
    events = api_events(client, "?limit=1000")["events"]
    oldest = events[-1]
    assert api_events(client, f"?until={quote(oldest['at'])}")["events"][0]["id"] == oldest["id"]
    # the same moment, written two hours ahead with its offset
    moment = datetime.fromisoformat(oldest["at"]).astimezone(timezone(timedelta(hours=2)))
    found = client.get(
        "/api/events", query_string={"until": moment.isoformat()}, headers=admin_headers()
    ).get_json()["events"]
    assert [e["id"] for e in found] == [oldest["id"]]
    page = api_events(client, "?action=skip&limit=10")
    assert len(page["events"]) == 10 and page["next_before"] == page["events"][-1]["id"]
    last = api_events(client, "?action=skip&limit=30")
    assert len(last["events"]) == 30 and last["next_before"] is None  # exactly the last page

    runner = CliRunner()
    env = {"WHEELFARM_DATA_DIR": str(services.settings.data_dir), "WHEELFARM_UPSTREAM_URL": "none"}
    result = runner.invoke(main, ["audit", "--until", oldest["at"], "--limit", "1000"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == str(oldest["id"])
    result = runner.invoke(
        main, ["audit", "--actor", "token:alice-admin", "--action", "skip"], env=env
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 30 and "token:alice-admin" in result.output
    result = runner.invoke(main, ["audit", "--actor", "nobody"], env=env)
    assert result.exit_code == 0 and result.output == ""
    result = runner.invoke(main, ["audit", "--until", "soon"], env=env)
    assert result.exit_code == 1 and "--until" in result.output and "ISO 8601" in result.output
