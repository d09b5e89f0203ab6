"""The console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium)
against a live server: browse, read a failed build's log, log in, rebuild, and watch the
live log grow while a worker builds; an admin changes a project's owners and reads the
audit log."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import build_services
from tests.conftest import ADMIN_TOKEN, LiveServer, start_server, stop_server
from tests.console_helpers import FAILURE, PLATFORM, LiveHttp, populate
from tests.factory import make_wheel
from tests.http_helpers import sha256_of

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (.ci/setup.d/50-chromium.sh)",
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "data", tmp_path / "server.log")
    yield live
    stop_server(live)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver: WebDriver, seconds: float = 10) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.1)


def shoot(driver: WebDriver, path: Path) -> None:
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    target = os.environ.get("WHEELFARM_SCREENSHOT_DIR")
    if target:  # to look at them after the run
        shutil.copy(path, Path(target) / path.name)


def test_browse_read_a_failed_log_log_in_rebuild_and_watch_it_live(
    server: LiveServer, browser: WebDriver, tmp_path: Path
) -> None:
    services = build_services(
        Settings.from_env({}, data_dir=server.data_dir, admin_token=ADMIN_TOKEN, upstream_urls=()),
        migrate=False,
    )
    upload = create_token(services.engine, "tests", "upload")[1]
    build = create_token(services.engine, "worker", "build")[1]
    http = LiveHttp(server.url)
    scenario = populate(http, services, tmp_path, upload, build)
    failed_id = scenario.ids[f"demo-pkg 1.0 {PLATFORM}"]

    # The dashboard: queue, workers, failures.
    browser.get(server.url + "/console/")
    assert browser.title == "Dashboard · wheelfarm"
    row = browser.find_element(By.CSS_SELECTOR, f'#queue tr[data-platform="{PLATFORM}"]')
    assert row.find_element(By.CSS_SELECTOR, ".running").text == "1"
    assert "worker-1" in browser.find_element(By.ID, "workers").text
    assert "missing_system_library" in browser.find_element(By.ID, "failures").text
    shoot(browser, tmp_path / "dashboard.png")

    # Search, then the project's page.
    search = browser.find_element(By.ID, "search")
    search.send_keys("DEMO")
    search.submit()
    wait(browser).until(ec.title_is("Projects · wheelfarm"))
    browser.find_element(By.LINK_TEXT, "demo-pkg").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "matrix")))
    versions = [
        r.get_attribute("data-version")
        for r in browser.find_elements(By.CSS_SELECTOR, "#matrix tbody tr")
    ]
    assert versions == ["2.0", "1.0", "0.9"]
    assert "needs: libyaml-0-2" in browser.find_element(By.ID, "matrix").text
    shoot(browser, tmp_path / "project.png")

    # The failed build and its log.
    cell = browser.find_element(
        By.CSS_SELECTOR, f'tr[data-version="1.0"] td[data-platform="{PLATFORM}"] a.job'
    )
    cell.click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "state"), "failed"))
    assert browser.current_url == f"{server.url}/console/builds/{failed_id}"
    assert FAILURE in browser.find_element(By.ID, "log").text
    assert browser.find_element(By.ID, "error-category").text == "missing_system_library"
    assert not browser.find_elements(By.ID, "rebuild")

    # Log in as admin (back to the build), and rebuild.
    browser.find_element(By.LINK_TEXT, "Log in with an admin token").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "token")))
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "login-submit").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "rebuild")))
    assert browser.current_url == f"{server.url}/console/builds/{failed_id}"
    assert "admin" in browser.find_element(By.ID, "who").text
    browser.find_element(By.ID, "rebuild").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "state"), "queued"))
    assert "rebuild done" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert browser.find_element(By.ID, "log").get_attribute("data-live") == "true"

    # A worker takes the rebuild; its log shows up in the open page without a reload.
    status, job = http.post(
        "/api/worker/claim", build, {"worker": "worker-2", "platforms": [PLATFORM]}
    )
    assert status == 200 and job["id"] == failed_id and job["attempt"] == 1
    line = "this time libyaml-dev is installed\n"
    assert http.post(
        f"/api/worker/jobs/{failed_id}/log", build, {"lease": job["lease"], "text": line}
    ) == (204, None)
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "log"), line.strip()))
    assert browser.find_element(By.ID, "state").text == "running"
    shoot(browser, tmp_path / "build-live.png")
    # When it finishes, the page reloads itself with the outcome.
    status, _ = http.post(
        f"/api/worker/jobs/{failed_id}/finish",
        build,
        {"lease": job["lease"], "outcome": "succeeded", "build_seconds": 3.0},
    )
    assert status == 200
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "built"), "3.0 s"))
    assert browser.find_element(By.ID, "state").text == "succeeded"
    assert browser.find_element(By.ID, "worker").text == "worker-2"
    shoot(browser, tmp_path / "build.png")
    services.engine.dispose()


def test_an_admin_manages_owners_and_reads_the_audit_log(
    server: LiveServer, browser: WebDriver, tmp_path: Path
) -> None:
    services = build_services(
        Settings.from_env({}, data_dir=server.data_dir, admin_token=ADMIN_TOKEN, upstream_urls=()),
        migrate=False,
    )
    upload = create_token(services.engine, "team-a-ci", "upload", owner="team-a")[1]
    admin_id, admin = create_token(services.engine, "alice", "admin", owner="ops")
    services.engine.dispose()
    wheel = make_wheel(tmp_path, "owned-pkg", "1.0")
    with wheel.open("rb") as fh:
        response = requests.post(
            f"{server.url}/{PLATFORM}/legacy/",
            data={":action": "file_upload", "sha256_digest": sha256_of(wheel)},
            files={"content": (wheel.name, fh)},
            auth=("__token__", upload),
            timeout=30,
        )
    assert response.status_code == 201, response.text

    # Anonymous: the owners are shown, no forms, no audit link.
    browser.get(f"{server.url}/console/projects/owned-pkg")
    owners = browser.find_element(By.ID, "owners")
    assert "team-a" in owners.text
    assert not browser.find_elements(By.ID, "add-owner")
    assert not browser.find_elements(By.ID, "nav-audit")

    # Log in as an admin (back to the project page); add an owner, then remove the first.
    browser.find_element(By.ID, "login-link").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "token")))
    browser.find_element(By.ID, "token").send_keys(admin)
    browser.find_element(By.ID, "login-submit").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "add-owner")))
    assert browser.current_url == f"{server.url}/console/projects/owned-pkg"
    browser.find_element(By.ID, "owner-name").send_keys("team-b")
    browser.find_element(By.ID, "add-owner-submit").click()
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-owner="team-b"]'))
    )
    assert (
        "team-b is now an owner of owned-pkg."
        in browser.find_element(By.CSS_SELECTOR, ".flash").text
    )
    browser.find_element(By.CSS_SELECTOR, 'tr[data-owner="team-a"] .remove-owner').click()
    wait(browser).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "no longer"))
    listed = [
        r.get_attribute("data-owner")
        for r in browser.find_elements(By.CSS_SELECTOR, "#owner-list tr[data-owner]")
    ]
    assert listed == ["team-b"]
    shoot(browser, tmp_path / "owners.png")

    # The audit log from the nav: newest first, the owner changes by alice from this browser.
    browser.find_element(By.ID, "nav-audit").click()
    wait(browser).until(ec.title_is("Audit log · wheelfarm"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    actions = [r.get_attribute("data-action") for r in rows]
    assert actions[:3] == ["owner remove", "owner add", "console login"]
    assert "add (upload)" in actions and actions.count("owner add") == 2  # + the first upload's
    newest = rows[0].text
    assert "owned-pkg" in newest and "token:alice" in newest and "127.0.0.1" in newest
    assert str(admin_id) in newest and "ops" in newest
    # Filter by an action prefix and the project, with the form.
    browser.find_element(By.NAME, "action").send_keys("owner*")
    browser.find_element(By.NAME, "project").send_keys("Owned_Pkg")
    browser.find_element(By.ID, "audit-filter").click()
    wait(browser).until(ec.url_contains("action=owner"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    assert [r.get_attribute("data-action") for r in rows] == [
        "owner remove",
        "owner add",
        "owner add",
    ]
    assert "team-a (first upload)" in rows[2].text
    shoot(browser, tmp_path / "audit.png")
