"""The web console through Flask's test client: every page, login, CSRF and the actions."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Tag
from flask.testing import FlaskClient

from index_server import jobs
from index_server.app import create_app
from index_server.auth import create_token, revoke_token
from index_server.config import Settings
from index_server.console.formatting import filesize
from index_server.console.security import load_secret_key
from index_server.db.engine import read_connection
from index_server.repository import find_file, list_events
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN
from tests.console_helpers import (
    FAILED_LOG,
    FAILURE,
    OTHER_PLATFORM,
    PLATFORM,
    RUNNING_LOG,
    FlaskHttp,
    Scenario,
    populate,
)


@pytest.fixture
def build_token(services: Services) -> str:
    return create_token(services.engine, "worker", "build")[1]


@pytest.fixture
def scenario(
    client: FlaskClient, services: Services, tmp_path: Path, upload_token: str, build_token: str
) -> Scenario:
    return populate(FlaskHttp(client), services, tmp_path, upload_token, build_token)


def page(client: FlaskClient, path: str, status: int = 200) -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.content_type.startswith("text/html")
    return BeautifulSoup(response.text, "html.parser")


def text(node: Tag | None) -> str:
    assert node is not None
    return " ".join(node.get_text(" ").split())


def csrf(soup: BeautifulSoup) -> str:
    field = soup.find("input", attrs={"name": "csrf_token"})
    assert isinstance(field, Tag)
    return str(field["value"])


def login(client: FlaskClient, token: str, status: int = 302) -> None:
    token_field = csrf(page(client, "/console/login"))
    response = client.post("/console/login", data={"csrf_token": token_field, "token": token})
    assert response.status_code == status, response.text[:300]


def state_of(services: Services, job_id: int) -> str:
    return str(jobs.get_job(services, job_id, with_log=False)["state"])


def test_dashboard_shows_queue_workers_throughput_and_failures(
    client: FlaskClient, scenario: Scenario
) -> None:
    soup = page(client, "/console/")
    queue = soup.find(id="queue")
    row = queue.find("tr", attrs={"data-platform": PLATFORM})
    assert (text(row.find(class_="queued")), text(row.find(class_="running"))) == ("0", "1")
    other = queue.find("tr", attrs={"data-platform": OTHER_PLATFORM})
    assert (text(other.find(class_="queued")), text(other.find(class_="running"))) == ("1", "0")
    # An emulated platform says so; a native one does not.
    emulated = queue.find("tr", attrs={"data-platform": "debian-12-py3.11-aarch64"})
    assert emulated.find(class_="emulated") is not None and row.find(class_="emulated") is None
    assert text(soup.find(id="last-hour")) == "2" and text(soup.find(id="last-day")) == "2"
    workers = text(soup.find(id="workers"))
    assert "worker-1" in workers and "1 alive of 1" in workers and "alive" in workers
    failures = soup.find(id="failures")
    [failed_row] = failures.find("tbody").find_all("tr")
    assert "demo-pkg" in text(failed_row) and "1.0" in text(failed_row)
    assert "missing_system_library" in text(failed_row) and PLATFORM in text(failed_row)
    link = failed_row.find("a", href=f"/console/builds/{scenario.ids[f'demo-pkg 1.0 {PLATFORM}']}")
    assert link is not None
    # Reading needs no login and starts no session.
    assert "Set-Cookie" not in client.get("/console/").headers


def test_empty_dashboard_and_unknown_pages(client: FlaskClient) -> None:
    soup = page(client, "/console/")
    assert "No worker has connected yet" in text(soup.find(id="workers"))
    assert "No failed builds" in text(soup.find(id="failures"))
    missing = page(client, "/console/builds/999", 404)
    assert "no build 999" in text(missing.find(id="error"))
    assert "no project 'nothing'" in text(page(client, "/console/projects/nothing", 404))
    assert client.get("/console").status_code == 308  # to /console/


def test_project_search_by_canonical_substring(client: FlaskClient, scenario: Scenario) -> None:
    def found(query: str) -> list[str]:
        soup = page(client, f"/console/projects?q={query}")
        return [text(a) for a in soup.select("#results a.project")]

    assert found("demo") == ["demo-pkg"]
    assert found("Demo_PKG") == ["demo-pkg"]  # canonicalized like a project name
    assert found("thing") == ["other-thing"]  # known only from its build job
    assert found("") == ["demo-pkg", "other-thing"]
    assert found("g") == ["demo-pkg", "other-thing"]
    assert found("%") == []  # LIKE wildcards are escaped
    soup = page(client, "/console/projects?q=<script>")
    assert "No project matches “<script>”" in text(soup.find(id="no-results"))
    assert soup.find("script") is None  # the query was escaped, not injected


def test_project_matrix(client: FlaskClient, services: Services, scenario: Scenario) -> None:
    assert (
        client.get("/console/projects/Demo_Pkg")
        .headers["Location"]
        .endswith("/console/projects/demo-pkg")
    )
    soup = page(client, "/console/projects/demo-pkg")
    rows = soup.select("#matrix tbody tr")
    assert [r["data-version"] for r in rows] == ["2.0", "1.0", "0.9"]  # PEP 440, newest first
    headers = [text(th) for th in soup.select("#matrix thead th")]
    assert PLATFORM in headers and OTHER_PLATFORM in headers

    def cell(version: str, platform: str) -> Tag:
        row = soup.find("tr", attrs={"data-version": version})
        found = row.find("td", attrs={"data-platform": platform})
        assert isinstance(found, Tag)
        return found

    built = cell("2.0", PLATFORM)
    assert scenario.wheel in text(built) and "needs: libyaml-0-2" in text(built)
    with read_connection(services.engine) as conn:
        size = find_file(conn, PLATFORM, scenario.wheel).size
    assert f"{scenario.wheel} {filesize(size)} succeeded" in text(built)
    failed = cell("1.0", PLATFORM)
    link = failed.find("a", class_="job")
    assert link["href"] == f"/console/builds/{scenario.ids[f'demo-pkg 1.0 {PLATFORM}']}"
    assert "failed" in text(failed) and "missing_system_library" in text(failed)
    assert "queued" in text(cell("2.0", OTHER_PLATFORM))
    assert text(cell("0.9", PLATFORM)) == "\N{EN DASH}"
    hosted = {r["data-version"]: text(r.find_all("td")[1]) for r in rows}
    assert "demo_pkg-2.0.tar.gz" in hosted["2.0"] and "demo_pkg-1.0.tar.gz" in hosted["1.0"]
    assert "demo_pkg-0.9-py3-none-any.whl" in hosted["0.9"]
    # A project known only from its build is shown too.
    other = page(client, "/console/projects/other-thing")
    assert "running" in text(other.find("tr", attrs={"data-version": "0.1"}))


def test_failed_build_page(client: FlaskClient, services: Services, scenario: Scenario) -> None:
    jobs.set_project_settings(services, "demo-pkg", {"os_packages": ["libyaml-dev"]}, "admin")
    job_id = scenario.ids[f"demo-pkg 1.0 {PLATFORM}"]
    soup = page(client, f"/console/builds/{job_id}")
    assert text(soup.find(id="state")) == "failed"
    assert soup.find(id="log").get_text() == FAILED_LOG + FAILURE + "\n"
    assert soup.find(id="log")["data-live"] == "false"
    assert text(soup.find(id="error-category")) == "missing_system_library"
    assert text(soup.find(id="error-summary")) == FAILURE
    assert text(soup.find(id="built")) == "7.0 s" and text(soup.find(id="worker")) == "worker-1"
    assert text(soup.find(id="attempts")) == "1"
    assert text(soup.find(id="image")) == "sha256:0123456789abcdef"
    assert "libyaml-dev" in text(soup.find(id="settings"))
    assert soup.find(id="rebuild") is None  # not logged in: no actions, a login link
    assert "Log in with an admin token" in text(soup.find(id="actions"))


def test_succeeded_build_page_lists_wheels_and_os_packages(
    client: FlaskClient, scenario: Scenario
) -> None:
    soup = page(client, f"/console/builds/{scenario.ids[f'demo-pkg 2.0 {PLATFORM}']}")
    assert text(soup.find(id="os-packages")) == "libyaml-0-2"
    wheel_link = soup.select_one("#wheels a")
    assert text(wheel_link) == scenario.wheel
    assert client.get(wheel_link["href"]).status_code == 200  # the file is downloadable
    assert text(soup.find(id="built")) == "42.5 s"
    assert "Defaults" in text(soup)  # no build settings


def test_live_log_polling(
    client: FlaskClient, services: Services, scenario: Scenario, build_token: str
) -> None:
    job_id = scenario.ids[f"other-thing 0.1 {PLATFORM}"]
    soup = page(client, f"/console/builds/{job_id}")
    log = soup.find(id="log")
    assert log["data-live"] == "true" and log["data-offset"] == str(len(RUNNING_LOG))
    poll = log["data-poll"]
    first = client.get(f"{poll}?offset=0").get_json()
    assert first == {
        "state": "running",
        "text": RUNNING_LOG,
        "offset": len(RUNNING_LOG),
        "reset": False,
        "done": False,
    }
    more = "linking … done ✓\n"
    answer = client.post(
        f"/api/worker/jobs/{job_id}/log",
        json={"lease": scenario.running_lease, "text": more},
        headers={"Authorization": f"Bearer {build_token}"},
    )
    assert answer.status_code == 204
    second = client.get(f"{poll}?offset={first['offset']}").get_json()
    assert second["text"] == more and second["offset"] == len(RUNNING_LOG + more)
    assert client.get(f"{poll}?offset={second['offset']}").get_json()["text"] == ""
    assert client.get(f"{poll}?offset=x").status_code == 400
    assert client.get("/console/builds/999/log.json").status_code == 404
    # A rebuild starts the log afresh: the poller is told to start over.
    jobs.cancel(services, job_id, "tests")
    jobs.rebuild(services, job_id, "tests")
    reset = client.get(f"{poll}?offset={second['offset']}").get_json()
    assert reset["reset"] is True and reset["text"] == "" and reset["offset"] == 0
    assert reset["state"] == "queued" and reset["done"] is False


def test_actions_need_login_csrf_and_admin(
    client: FlaskClient, services: Services, scenario: Scenario
) -> None:
    job_id = scenario.ids[f"demo-pkg 1.0 {PLATFORM}"]
    # Anonymous, even with a valid CSRF token: sent to the login page, nothing done.
    token_field = csrf(page(client, "/console/login"))
    response = client.post(f"/console/builds/{job_id}/rebuild", data={"csrf_token": token_field})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/console/login?next=/console/builds/{job_id}"
    assert state_of(services, job_id) == "failed"
    # A read token may log in (to view) but not act.
    read = create_token(services.engine, "viewer", "read")[1]
    login(client, read)
    soup = page(client, f"/console/builds/{job_id}")
    assert soup.find(id="rebuild") is None
    response = client.post(f"/console/builds/{job_id}/rebuild", data={"csrf_token": csrf(soup)})
    assert response.status_code == 403 and state_of(services, job_id) == "failed"
    # An admin: no CSRF token, or a wrong one, is refused.
    login(client, ADMIN_TOKEN)
    soup = page(client, f"/console/builds/{job_id}")
    assert client.post(f"/console/builds/{job_id}/rebuild").status_code == 400
    wrong = client.post(f"/console/builds/{job_id}/rebuild", data={"csrf_token": "x" * 43})
    assert wrong.status_code == 400 and state_of(services, job_id) == "failed"
    # The old session's CSRF token died with the new login (no fixation).
    stale = client.post(f"/console/builds/{job_id}/rebuild", data={"csrf_token": token_field})
    assert stale.status_code == 400
    response = client.post(f"/console/builds/{job_id}/rebuild", data={"csrf_token": csrf(soup)})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/console/builds/{job_id}")
    rebuilt = jobs.get_job(services, job_id)
    assert (rebuilt["state"], rebuilt["attempts"], rebuilt["log"]) == ("queued", 0, "")
    soup = page(client, f"/console/builds/{job_id}")
    assert f"Build {job_id}: rebuild done." in text(soup.find(class_="flash"))
    assert text(soup.find(id="state")) == "queued"
    with read_connection(services.engine) as conn:
        events = list_events(conn)
    assert any(e["action"] == "build rebuild" and "admin" in e["actor"] for e in events)
    assert any(e["action"] == "console login" for e in events)


def act(client: FlaskClient, path: str, **form: str) -> BeautifulSoup:
    """POST a console form and follow the redirect; the page shown after it."""
    response = client.post(path, data=form, follow_redirects=True)
    assert response.status_code == 200, response.text[:300]
    return BeautifulSoup(response.text, "html.parser")


def test_cancel_and_skip(client: FlaskClient, services: Services, scenario: Scenario) -> None:
    running = scenario.ids[f"other-thing 0.1 {PLATFORM}"]
    queued = scenario.ids[f"demo-pkg 2.0 {OTHER_PLATFORM}"]
    login(client, ADMIN_TOKEN)
    soup = page(client, f"/console/builds/{running}")
    assert soup.find(id="cancel") is not None and soup.find(id="rebuild") is None
    token = csrf(soup)
    soup = act(client, f"/console/builds/{running}/cancel", csrf_token=token, reason="stuck")
    assert text(soup.find(class_="flash")) == f"Build {running}: cancel done."
    cancelled = jobs.get_job(services, running)
    assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "stuck")
    # Skipping needs a reason.
    soup = act(client, f"/console/builds/{queued}/skip", csrf_token=token, reason=" ")
    assert "Say why" in text(soup.find(class_="flash"))
    assert state_of(services, queued) == "queued"
    act(client, f"/console/builds/{queued}/skip", csrf_token=token, reason="no arm")
    assert jobs.get_job(services, queued)["reason"] == "no arm"
    # An action that does not apply says why, and changes nothing.
    soup = act(client, f"/console/builds/{queued}/cancel", csrf_token=token)
    assert "cannot cancel a skipped job" in text(soup.find(class_="flash"))
    assert text(soup.find(id="state")) == "skipped"
    assert client.post("/console/builds/999/rebuild", data={"csrf_token": token}).status_code == 404


def test_login_refusals_logout_and_revocation(
    client: FlaskClient, services: Services, scenario: Scenario
) -> None:
    login(client, "wf_not-a-token", status=403)
    build = create_token(services.engine, "w", "build")[1]
    login(client, build)  # build implies read: may view, not act
    assert "(build)" in text(page(client, "/console/").find(id="who"))
    # Without the form's CSRF token, no login.
    response = client.post("/console/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 400
    token_id, secret = create_token(services.engine, "ops", "admin")
    login(client, secret)
    soup = page(client, "/console/")
    assert "token:ops" in text(soup.find(id="who"))
    revoke_token(services.engine, token_id)  # ends the session at once
    assert page(client, "/console/").find(id="login-link") is not None
    login(client, ADMIN_TOKEN)
    soup = page(client, "/console/")
    assert client.post("/console/logout").status_code == 400  # CSRF here too
    response = client.post("/console/logout", data={"csrf_token": csrf(soup)})
    assert response.status_code == 302
    assert page(client, "/console/").find(id="login-link") is not None


def test_login_redirects_only_within_the_console(client: FlaskClient) -> None:
    soup = page(client, "/console/login?next=https://evil.example/")
    assert soup.find("input", attrs={"name": "next"})["value"] == "/console/"
    response = client.post(
        "/console/login",
        data={"csrf_token": csrf(soup), "token": ADMIN_TOKEN, "next": "//evil.example/x"},
    )
    assert response.headers["Location"] == "/console/"
    soup = page(client, "/console/login?next=/console/builds/1")
    response = client.post(
        "/console/login",
        data={"csrf_token": csrf(soup), "token": ADMIN_TOKEN, "next": "/console/builds/1"},
    )
    assert response.headers["Location"] == "/console/builds/1"


def test_everything_is_escaped(
    client: FlaskClient, services: Services, tmp_path: Path, upload_token: str, build_token: str
) -> None:
    jobs.request_build(services, "evil", "1.0", PLATFORM, "request", "<i>someone</i>")
    http = FlaskHttp(client)
    _, job = http.post(
        "/api/worker/claim", build_token, {"worker": "<b>w</b>", "platforms": [PLATFORM]}
    )
    hostile = "<script>alert(1)</script>"
    http.post(
        f"/api/worker/jobs/{job['id']}/log", build_token, {"lease": job["lease"], "text": hostile}
    )
    http.post(
        f"/api/worker/jobs/{job['id']}/finish",
        build_token,
        {"lease": job["lease"], "outcome": "failed", "error_summary": hostile},
    )
    for path in (f"/console/builds/{job['id']}", "/console/", "/console/projects/evil"):
        body = client.get(path).text
        assert hostile not in body and "<b>w</b>" not in body and "<i>someone" not in body
    soup = page(client, f"/console/builds/{job['id']}")
    assert soup.find(id="log").get_text() == hostile  # shown as text
    assert len(soup.find_all("script")) == 1  # only the page's own


def test_builds_list_filters(client: FlaskClient, scenario: Scenario) -> None:
    def ids(query: str) -> set[str]:
        soup = page(client, f"/console/builds?{query}")
        return {text(a) for a in soup.select("#builds tbody tr td:first-child a")}

    every = {f"#{i}" for i in scenario.ids.values()}
    assert ids("") == every
    assert ids("state=failed") == {f"#{scenario.ids[f'demo-pkg 1.0 {PLATFORM}']}"}
    assert ids(f"platform={OTHER_PLATFORM}") == {
        f"#{scenario.ids[f'demo-pkg 2.0 {OTHER_PLATFORM}']}"
    }
    assert ids("project=Other_Thing") == {f"#{scenario.ids[f'other-thing 0.1 {PLATFORM}']}"}
    assert client.get("/console/builds?state=bogus").status_code == 400


def test_read_requires_token_closes_the_console(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "closed",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        read_requires_token=True,
    )
    services = build_services(settings)
    client = create_app(services=services).test_client()
    response = client.get("/console/builds?state=failed")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login?next=")
    assert client.get("/console/builds/1/log.json").status_code == 401
    assert client.get("/console/login").status_code == 200
    read = create_token(services.engine, "viewer", "read")[1]
    login(client, read)
    assert client.get("/console/builds?state=failed").status_code == 200
    services.engine.dispose()


def test_session_key_is_private_shared_and_made_once(tmp_path: Path) -> None:
    data = tmp_path / "keys"
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_secret_key(data))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1 and len(results[0]) == 64
    key_file = data / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in data.iterdir()] == ["secret_key"]  # no temporary files left
    assert load_secret_key(data) == results[0]


def test_a_session_survives_a_new_app_on_the_same_data_dir(
    settings: Settings, services: Services
) -> None:
    first = create_app(services=services).test_client()
    login(first, ADMIN_TOKEN)
    cookie = first.get_cookie("wheelfarm_console")
    assert cookie is not None and ADMIN_TOKEN not in cookie.value
    second = create_app(services=build_services(settings, migrate=False)).test_client()
    second.set_cookie("wheelfarm_console", cookie.value)
    assert "admin" in text(page(second, "/console/").find(id="who"))
