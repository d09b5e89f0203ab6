"""``wheelfarm request SPEC``: versions resolved against each platform's page, as pip would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.factory import make_sdist, make_wheel
from tests.warm_helpers import Farm, open_farm

DEBIAN = "debian-12-py3.11-x86_64"  # Python 3.11
NOBLE = "ubuntu-24.04-py3.12-x86_64"  # Python 3.12


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    directory = tmp_path_factory.mktemp("request")
    with open_farm(directory) as farm:
        dists = directory / "dists"
        dists.mkdir()
        files = [
            make_sdist(dists, "rqdemo", "1.0"),
            make_sdist(dists, "rqdemo", "1.5"),
            make_wheel(dists, "rqdemo", "1.5", tag="cp311-cp311-linux_x86_64"),
            make_sdist(dists, "rqdemo", "2.0", requires_python=">=3.12"),
            make_sdist(dists, "rqdemo", "2.1rc1", requires_python=">=3.12"),
            make_sdist(dists, "rqdemo", "3.0"),
            make_sdist(dists, "rqpre", "0.9b1"),
            make_sdist(dists, "rqy", "1.0"),
            make_sdist(dists, "rqy", "2.0"),
        ]
        farm.upload(DEBIAN, files)  # the binary wheel belongs to DEBIAN, sdists to all
        yank = next(
            f for f in farm.api("GET", "/api/projects/rqy")["files"] if f["version"] == "2.0"
        )
        farm.api("POST", f"/api/files/{yank['id']}/yank", {"reason": "broken"})
        yield farm


def request(farm: Farm, *args: str) -> tuple[int, list[dict]]:  # type: ignore[type-arg]
    result = farm.wheelfarm("request", *args, "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)["requests"]


def outcomes(rows: list[dict]) -> list[tuple]:  # type: ignore[type-arg]
    return [(r["platform"], r["version"], r["outcome"]) for r in rows]


def test_newest_matching_version_is_queued_and_then_reported_existing(farm: Farm) -> None:
    spec = "rqdemo>=1,<3"
    code, rows = request(farm, spec, "--platform", DEBIAN, "--platform", NOBLE)
    assert code == 0
    # Python 3.11: 2.0 and 2.1rc1 need 3.12, so 1.5, which has a wheel here already.
    # Python 3.12: 2.0 (2.1rc1 is a pre-release and a final release matches).
    assert sorted(outcomes(rows)) == [(DEBIAN, "1.5", "has_wheel"), (NOBLE, "2.0", "queued")]
    job_id = next(r["job_id"] for r in rows if r["platform"] == NOBLE)
    jobs = farm.jobs(NOBLE, "rqdemo")
    assert [(j["id"], j["version"], j["state"], j["source"]) for j in jobs] == [
        (job_id, "2.0", "queued", "request")
    ]
    assert farm.jobs(DEBIAN, "rqdemo") == []

    again = farm.wheelfarm("request", spec, "--platform", DEBIAN, "--platform", NOBLE)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].split() == [
        "PROJECT",
        "VERSION",
        "PLATFORM",
        "OUTCOME",
        "JOB",
        "STATE",
        "DETAIL",
    ]
    table = {tuple(line.split()[:4]) + tuple(line.split()[4:6]) for line in lines[2:4]}
    assert table == {
        ("rqdemo", "2.0", NOBLE, "exists", str(job_id), "queued"),
        ("rqdemo", "1.5", DEBIAN, "has_wheel"),
    }
    assert lines[-1] == "0 queued, 2 already existed (a job or a wheel)"


def test_all_matching_requests_every_matching_version(farm: Farm) -> None:
    code, rows = request(farm, "rqdemo>=1,<3", "--all-matching", "--platform", DEBIAN)
    assert code == 0
    assert outcomes(rows) == [(DEBIAN, "1.5", "has_wheel"), (DEBIAN, "1.0", "queued")]


def test_pre_releases_as_pip_chooses_them(farm: Farm) -> None:
    # Named in the specifier: allowed.
    _, rows = request(farm, "rqdemo>=2.1rc1,<3", "--platform", NOBLE)
    assert outcomes(rows) == [(NOBLE, "2.1rc1", "queued")]
    # Nothing but pre-releases: taken.
    _, rows = request(farm, "rqpre", "--platform", NOBLE)
    assert outcomes(rows) == [(NOBLE, "0.9b1", "queued")]
    # --pre: the newest, pre-release or not.
    _, rows = request(farm, "rqdemo<3", "--pre", "--platform", NOBLE)
    assert outcomes(rows) == [(NOBLE, "2.1rc1", "exists")]


def test_yanked_versions_only_when_pinned_and_env_configuration(farm: Farm) -> None:
    env = {"WHEELFARM_SERVER_URL": farm.url, "WHEELFARM_TOKEN": farm.upload_token}
    unpinned = farm.wheelfarm("request", "rqy", "--platform", NOBLE, env=env, with_server=False)
    assert unpinned.returncode == 0, unpinned.stderr
    assert "rqy      1.0      ubuntu-24.04-py3.12-x86_64  queued" in unpinned.stdout
    pinned = farm.wheelfarm("request", "rqy==2.0", "--platform", NOBLE, env=env, with_server=False)
    assert pinned.returncode == 0, pinned.stderr
    assert "rqy      2.0      ubuntu-24.04-py3.12-x86_64  queued" in pinned.stdout
    assert sorted(j["version"] for j in farm.jobs(NOBLE, "rqy")) == ["1.0", "2.0"]


def test_markers_missing_projects_and_bad_input(farm: Farm) -> None:
    code, rows = request(farm, 'rqdemo; platform_machine == "aarch64"', "--platform", DEBIAN)
    assert code == 0 and outcomes(rows) == [(DEBIAN, None, "marker")]

    code, rows = request(farm, "nosuchproject", "--platform", DEBIAN)
    assert code == 1 and outcomes(rows) == [(DEBIAN, None, "not_found")]

    code, rows = request(farm, "rqdemo>5", "--platform", NOBLE, "--platform", DEBIAN)
    assert code == 1 and [r["outcome"] for r in rows] == ["no_match", "no_match"]
    assert "on the index: 3.0, 2.1rc1, 2.0, 1.5, 1.0" in rows[0]["detail"]

    unknown = farm.wheelfarm("request", "rqdemo", "--platform", "windows-11")
    assert unknown.returncode == 2 and "unknown platform(s) windows-11" in unknown.stderr
    assert DEBIAN in unknown.stderr  # the known ones are listed
    invalid = farm.wheelfarm("request", "rqdemo>>1", "--platform", DEBIAN)
    assert invalid.returncode == 2 and "Invalid value for SPEC" in invalid.stderr

    anonymous = farm.wheelfarm(
        "request", "rqdemo", "--platform", DEBIAN, "--server", farm.url, with_server=False
    )
    assert anonymous.returncode == 1
    assert "HTTP 401: authentication required" in anonymous.stderr
