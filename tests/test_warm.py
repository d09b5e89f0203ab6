"""``wheelfarm warm`` against a real server, real pip/uv/twine, and the HTTP test worker."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.warm.lockfiles import read_uv_lock
from client.warm.requirements import RequirementsFileError, read_inputs
from platforms import load_platforms
from tests.conftest import BIN, clean_client_env
from tests.factory import make_wheel
from tests.warm_helpers import Farm, make_test_sdist, open_farm, sha256_of

DEBIAN = "debian-12-py3.11-x86_64"  # this machine
ARM = "ubuntu-24.04-py3.12-aarch64"

# Test distributions, all uploaded once; sdists are for every platform, so need wheels.
SDISTS: dict[tuple[str, str], list[str]] = {
    # markers that hold on some platforms only
    ("mapp", "1.0"): [
        "mbase>=1",
        "mold; python_version < '3.12'",
        "marm; platform_machine == 'aarch64'",
    ],
    ("mbase", "1.0"): [],
    ("mbase", "2.0"): ["mleaf"],
    ("mleaf", "1.0"): [],
    ("mold", "1.0"): [],
    ("marm", "1.0"): [],
    # a chain, built by the test worker
    ("capp", "1.0"): ["cmid", "cpure"],
    ("cmid", "1.0"): ["cleaf>=1"],
    ("cleaf", "1.0"): [],
    # a build that fails
    ("fapp", "1.0"): ["fbroken"],
    ("fbroken", "1.0"): [],
    # a terminal
    ("tone", "1.0"): ["ttwo"],
    ("ttwo", "1.0"): [],
    # hashes
    ("happ", "1.0"): ["hdep"],
    ("hdep", "1.0"): [],
    # lock files
    ("lone", "1.0"): ["lold; python_version < '3.12'"],
    ("lold", "1.0"): [],
    ("larm", "1.0"): [],
}
PURE_WHEELS = [("cpure", "1.0"), ("lpure", "1.0")]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    directory = tmp_path_factory.mktemp("warm")
    with open_farm(directory) as farm:
        dists = directory / "dists"
        dists.mkdir()
        files = [
            make_test_sdist(dists, name, version, requires=requires)
            for (name, version), requires in SDISTS.items()
        ]
        files += [make_wheel(dists, name, version) for name, version in PURE_WHEELS]
        farm.upload(DEBIAN, files)
        # Resolutions for this machine's platform, for the whole module (no ARM resolver).
        with farm.resolver([DEBIAN]):
            yield farm


def write(farm: Farm, name: str, text: str) -> Path:
    path = farm.workdir / name
    path.write_text(text)
    return path


def warm_json(farm: Farm, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = farm.wheelfarm("warm", *args, "--json")
    try:
        return result.returncode, json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON:\n{result.stdout}\n{result.stderr}") from None


def statuses(report: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {d["project"]: (d["version"], d["status"]) for d in report["distributions"]}


def test_closure_follows_markers_of_each_platform(farm: Farm) -> None:
    requirements = write(farm, "markers.txt", "mapp\n")
    code, debian = warm_json(farm, "-r", str(requirements), "--platform", DEBIAN)
    assert code == 3, debian  # builds queued, not waited for
    assert statuses(debian) == {
        "mapp": ("1.0", "queued"),
        "mbase": ("2.0", "queued"),  # the newest, with its own dependency
        "mleaf": ("1.0", "queued"),
        "mold": ("1.0", "queued"),  # python_version < '3.12': Python 3.11 only
    }  # and no marm: platform_machine == 'aarch64' is false on the worker
    assert {d["source"] for d in debian["distributions"]} == {"resolution"}
    resolution = debian["resolution"]
    assert resolution["reused"] is False and resolution["worker"] == "http-test-worker"
    assert resolution["state"] == "succeeded" and resolution["distributions"] == 4
    shown = farm.api("GET", f"/api/builds/{resolution['job_id']}")
    assert shown["kind"] == "resolve" and shown["requirements"] == "mapp"
    assert "===== resolve" in shown["log"] and "Collecting mbase" in shown["log"]
    # The jobs are really on the server's queue, one per distribution.
    queued = {
        (j["project"], j["version"])
        for j in farm.jobs(DEBIAN)
        if j["project"][:1] == "m" and j["kind"] == "build"
    }
    assert queued == {("mapp", "1.0"), ("mbase", "2.0"), ("mleaf", "1.0"), ("mold", "1.0")}
    assert debian["ok"] is False and debian["platform"] == DEBIAN
    job = next(d for d in debian["distributions"] if d["project"] == "mold")
    assert job["api_url"] == f"{farm.url}/api/builds/{job['job_id']}"
    assert job["console_url"] == f"{farm.url}/console/builds/{job['job_id']}"


def test_with_no_worker_of_the_platform_the_resolution_waits(farm: Farm) -> None:
    requirements = write(farm, "markers-arm.txt", "mapp\n")
    code, arm = warm_json(
        farm, "-r", str(requirements), "--platform", ARM, "--timeout", "1", "--poll-interval", "0.2"
    )
    assert code == 3, arm
    job_id = arm["resolution"]["job_id"]
    assert arm["error"] == (
        f"not resolved yet: resolution job {job_id} is still queued after 1 s (no worker of "
        f"{ARM} has claimed it); console: {farm.url}/console/builds/{job_id}"
    )
    # Nothing was resolved on this machine: the job waits for an ARM worker, no build queued.
    assert [(j["kind"], j["state"]) for j in farm.jobs(ARM)] == [("resolve", "queued")]


def test_constraints_change_the_closure(farm: Farm) -> None:
    requirements = write(farm, "constrained.txt", "mapp\n")
    constraints = write(farm, "constraints.txt", "mbase<2\n")
    code, report = warm_json(
        farm, "-r", str(requirements), "-c", str(constraints), "--platform", DEBIAN
    )
    assert code == 3
    assert statuses(report)["mbase"] == ("1.0", "queued")
    assert "mleaf" not in statuses(report)  # only mbase 2.0 needs it


def test_wait_builds_the_closure_and_a_second_run_finds_every_wheel(farm: Farm) -> None:
    requirements = write(farm, "chain.txt", "capp==1.0\n")
    result, worker = farm.warm_while_working(
        "-r", str(requirements), "--platform", DEBIAN, platforms=[DEBIAN]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    built = [p for p, _, _, outcome in worker.handled if outcome == "succeeded"]
    assert sorted(p for p in built if p[0] == "c") == [
        "capp",
        "cleaf",
        "cmid",
    ]
    out = result.stdout
    # Not a terminal: plain progress lines for the CI log, then the summary table.
    assert "queued 0, building 0, done 3, failed 0" in out
    assert "-> built" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line[:1] == "c"}
    assert rows == {
        "capp": ["1.0", "built"],
        "cmid": ["1.0", "built"],
        "cleaf": ["1.0", "built"],
        "cpure": ["1.0", "has_wheel"],
    }
    assert "resolving on a worker of debian-12-py3.11-x86_64: job " in out
    assert "resolution: succeeded" in out
    assert re.search(r"^resolution job \d+: 4 distributions, resolved by worker http-test-worker$",
                     out, re.MULTILINE)  # fmt: skip
    jobs_before = len(farm.jobs(DEBIAN))
    code, report = warm_json(farm, "-r", str(requirements), "--platform", DEBIAN)
    assert code == 0 and report["ok"] is True
    assert report["resolution"]["reused"] is True  # the stored closure: no new job
    assert {s for _, s in statuses(report).values()} == {"has_wheel"}
    assert statuses(report)["capp"] == ("1.0", "has_wheel")
    wheel = next(d["wheel"] for d in report["distributions"] if d["project"] == "cmid")
    assert wheel == "cmid-1.0-cp311-cp311-linux_x86_64.whl"
    assert len(farm.jobs(DEBIAN)) == jobs_before  # nothing queued again


def test_on_a_terminal_the_progress_is_a_bar_with_counts(farm: Farm) -> None:
    requirements = write(farm, "tty.txt", "tone\n")
    result, _ = farm.warm_while_working(
        "-r", str(requirements), "--platform", DEBIAN, platforms=[DEBIAN], tty=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    screen = result.stdout
    assert "building  [" in screen and "0/2  queued 2, building 0, done 0, failed 0" in screen
    assert "2/2  queued 0, building 0, done 2, failed 0" in screen
    assert not re.search(r"job \d+ t", screen) and "-> built" not in screen  # no plain lines
    assert re.search(r"^tone +1\.0 +built ", screen, re.MULTILINE)


def test_a_failed_build_fails_the_run_and_is_named(farm: Farm) -> None:
    requirements = write(farm, "failing.txt", "fapp\n")
    failing = {"fbroken": "src/_speedups.c:3:10: fatal error: missing.h: No such file"}
    result, _ = farm.warm_while_working(
        "-r", str(requirements), "--platform", DEBIAN, platforms=[DEBIAN], failing=failing
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    job_id = next(j["id"] for j in farm.jobs(DEBIAN, "fbroken"))
    assert "FAILED fbroken 1.0: compiler_error: src/_speedups.c:3:10: fatal error: missing.h" in out
    assert "  | error: command '/usr/bin/gcc' failed with exit code 1" in out
    assert f"console: {farm.url}/console/builds/{job_id}" in out
    assert f"api:     {farm.url}/api/builds/{job_id}" in out
    assert "done 1, failed 1" in out  # fapp built, fbroken failed

    code, report = warm_json(farm, "-r", str(requirements), "--platform", DEBIAN)
    assert code == 1 and report["ok"] is False
    broken = next(d for d in report["distributions"] if d["project"] == "fbroken")
    assert broken["status"] == "failed" and broken["outcome"] == "exists"
    assert broken["error_category"] == "compiler_error"
    assert broken["log_tail"][-1] == "error: command '/usr/bin/gcc' failed with exit code 1"
    assert broken["job_id"] == job_id
    assert statuses(report)["fapp"] == ("1.0", "has_wheel")


def test_hashes_in_the_requirements_file_are_checked(farm: Farm) -> None:
    dists = farm.workdir.parent / "dists"
    happ, hdep = dists / "happ-1.0.tar.gz", dists / "hdep-1.0.tar.gz"
    good = write(
        farm,
        "hashed.txt",
        f"happ==1.0 --hash=sha256:{sha256_of(happ)}\nhdep==1.0 --hash=sha256:{sha256_of(hdep)}\n",
    )
    code, report = warm_json(farm, "-r", str(good), "--platform", DEBIAN)
    assert code == 3, report
    assert statuses(report) == {"happ": ("1.0", "queued"), "hdep": ("1.0", "queued")}

    bad = write(
        farm,
        "bad-hash.txt",
        f"happ==1.0 --hash=sha256:{sha256_of(happ)}\nhdep==1.0 --hash=sha256:{'0' * 64}\n",
    )
    result = farm.wheelfarm("warm", "-r", str(bad), "--platform", DEBIAN, "--poll-interval", "0.2")
    assert result.returncode == 1
    err = result.stderr
    assert "error: cannot resolve for debian-12-py3.11-x86_64:\ndoes_not_resolve: " in err, err
    assert "files do not match the hashes (hdep" in err
    job_id = int(re.findall(r"console: \S+/console/builds/(\d+)", err)[0])
    assert farm.api("GET", f"/api/builds/{job_id}")["error_category"] == "does_not_resolve"
    assert f"  api:     {farm.url}/api/builds/{job_id}" in err
    # pip's --require-hashes mode: a dependency without a hash is refused too.
    partial = write(farm, "partial-hash.txt", f"happ==1.0 --hash=sha256:{sha256_of(happ)}\n")
    code, report = warm_json(farm, "-r", str(partial), "--platform", DEBIAN)
    assert code == 1 and "In --require-hashes mode" in report["error"], report
    assert "hdep" in report["error"]
    assert report["resolution"]["error_category"] == "does_not_resolve"
    assert report["resolution"]["log_tail"]
    # A failed resolution queues no build.
    assert not (farm.api("GET", f"/api/builds/{job_id}")["result"] or {}).get("builds")


def test_includes_are_read_here_and_errors_name_the_file_and_line(farm: Farm) -> None:
    (farm.workdir / "inc").mkdir()
    write(farm, "inc/more.txt", "# more\ntone  # a comment\n-c pins.txt\n")
    write(farm, "inc/pins.txt", "ttwo==1.0\n")
    main = write(farm, "main.txt", "-r inc/more.txt\n")
    code, report = warm_json(farm, "-r", str(main), "--platform", DEBIAN)
    assert code in (0, 3), report
    assert set(statuses(report)) == {"tone", "ttwo"}
    shown = farm.api("GET", f"/api/builds/{report['resolution']['job_id']}")
    assert shown["requirements"] == "# more\ntone  # a comment"  # as text, comments and all
    assert shown["constraints"] == "ttwo==1.0"

    write(farm, "inc/broken.txt", "tone\nnot ok ===\n")
    broken = write(farm, "broken.txt", "ttwo\n-r inc/broken.txt\n")
    result = farm.wheelfarm("warm", "-r", str(broken), "--platform", DEBIAN)
    assert result.returncode == 1
    assert f"{farm.workdir / 'inc' / 'broken.txt'} line 2: " in result.stderr, result.stderr
    looping = write(farm, "loop.txt", "tone\n-r loop.txt\n")
    result = farm.wheelfarm("warm", "-r", str(looping), "--platform", DEBIAN)
    assert result.returncode == 1 and "includes itself" in result.stderr, result.stderr


def test_a_requirement_nothing_satisfies_fails_with_the_jobs_category(farm: Farm) -> None:
    requirements = write(farm, "nothing.txt", "tone==9.9\n")
    code, report = warm_json(farm, "-r", str(requirements), "--platform", DEBIAN)
    assert code == 1 and report["ok"] is False
    assert report["resolution"]["error_category"] == "does_not_resolve"
    assert report["error"].startswith(
        "cannot resolve for debian-12-py3.11-x86_64: does_not_resolve: "
    ), report["error"]
    assert "tone==9.9" in report["error"]


def _uv(farm: Farm, *args: str, cwd: Path) -> None:
    result = subprocess.run(
        [str(BIN / "uv"), *args, "--index-url", f"{farm.url}/{DEBIAN}/simple/"],
        env=clean_client_env(UV_CACHE_DIR=str(farm.workdir / "uv-cache"), NO_COLOR="1"),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_files_made_by_uv_are_read_with_each_platforms_markers(farm: Farm) -> None:
    project = farm.workdir / "locked"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "locked"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["lone", "larm; platform_machine == \'aarch64\'", "lpure"]\n'
    )
    _uv(farm, "lock", cwd=project)
    _uv(farm, "export", "--format", "pylock.toml", "-o", "pylock.toml", cwd=project)
    pylock = project / "pylock.toml"
    assert "marker = \"platform_machine == 'aarch64'\"" in pylock.read_text()
    expected = {
        DEBIAN: {
            "lone": ("1.0", "queued"),
            "lold": ("1.0", "queued"),
            "lpure": ("1.0", "has_wheel"),
        },
        ARM: {"lone": ("1.0", "queued"), "larm": ("1.0", "queued"), "lpure": ("1.0", "has_wheel")},
    }
    for platform, wanted in expected.items():
        for lock in (pylock, project / "uv.lock"):
            code, report = warm_json(farm, "-r", str(lock), "--platform", platform)
            assert code == 3, report
            assert statuses(report) == wanted, (lock.name, platform)
            assert {d["source"] for d in report["distributions"]} == {lock.name}
    elsewhere = farm.workdir / "pylock.windows.toml"
    elsewhere.write_text(
        pylock.read_text().replace(
            'requires-python = ">=3.10"',
            'requires-python = ">=3.10"\nenvironments = ["sys_platform == \'win32\'"]',
        )
    )
    code, report = warm_json(farm, "-r", str(elsewhere), "--platform", DEBIAN)
    assert code == 1 and "none of its environments is debian-12-py3.11-x86_64" in report["error"]


UV_LOCK = """\
version = 1
revision = 3
requires-python = ">=3.10"
resolution-markers = ["python_full_version >= '3.12'", "python_full_version < '3.12'"]

[[package]]
name = "proj"
version = "0.1"
source = { editable = "." }
dependencies = [
    { name = "web", extra = ["fast"] },
    { name = "numpyish", version = "1.0", marker = "python_full_version < '3.12'" },
    { name = "numpyish", version = "2.0", marker = "python_full_version >= '3.12'" },
    { name = "tool", marker = "sys_platform == 'win32'" },
    { name = "gitdep" },
]

[package.dev-dependencies]
dev = [{ name = "checker" }]

[[package]]
name = "web"
version = "3.0"
source = { registry = "https://x/simple" }
dependencies = [{ name = "core" }]

[package.optional-dependencies]
fast = [{ name = "speedup", marker = "platform_machine == 'aarch64'" }]
slow = [{ name = "never" }]

[[package]]
name = "numpyish"
version = "1.0"
source = { registry = "https://x/simple" }
resolution-markers = ["python_full_version < '3.12'"]

[[package]]
name = "numpyish"
version = "2.0"
source = { registry = "https://x/simple" }
resolution-markers = ["python_full_version >= '3.12'"]

[[package]]
name = "core"
version = "1.1"
source = { registry = "https://x/simple" }

[[package]]
name = "speedup"
version = "0.5"
source = { registry = "https://x/simple" }

[[package]]
name = "never"
version = "9"
source = { registry = "https://x/simple" }

[[package]]
name = "tool"
version = "1"
source = { registry = "https://x/simple" }

[[package]]
name = "checker"
version = "4"
source = { registry = "https://x/simple" }

[[package]]
name = "gitdep"
version = "0.0.1"
source = { git = "https://example.invalid/gitdep?rev=abc#abc" }
"""


def test_uv_lock_edges_extras_forks_and_groups(tmp_path: Path) -> None:
    """The uv.lock reader on its own: what uv sync would install on each platform."""
    known = load_platforms()
    lock = tmp_path / "uv.lock"
    lock.write_text(UV_LOCK)

    def chosen(platform: str) -> dict[str, tuple[str, str | None]]:
        return {p.name: (p.version, p.direct) for p in read_uv_lock(lock, known[platform])}

    common = {
        "web": ("3.0", None),
        "core": ("1.1", None),
        "checker": ("4", None),  # the dev group of the workspace member
        "gitdep": ("0.0.1", "git https://example.invalid/gitdep?rev=abc#abc"),
    }
    assert chosen(DEBIAN) == {**common, "numpyish": ("1.0", None)}
    assert chosen(ARM) == {**common, "numpyish": ("2.0", None), "speedup": ("0.5", None)}


def test_requirement_files_are_read_as_pip_reads_their_includes(tmp_path: Path) -> None:
    """The reader on its own: every include spelling, nesting, constraints, origins."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("alpha>=1 \\\n  --hash=sha256:" + "a" * 64 + "\n")
    (tmp_path / "sub" / "c.txt").write_text("-r c2.txt\ngamma<3\n")
    (tmp_path / "sub" / "c2.txt").write_text("delta==1\n")
    (tmp_path / "b.txt").write_text("beta\n")
    main = tmp_path / "main.txt"
    main.write_text(
        "--require-hashes\n-rsub/a.txt\n--requirement=b.txt\n-c sub/c.txt  # pins\nzeta\n"
    )
    extra = tmp_path / "extra-constraints.txt"
    extra.write_text("eta!=2\n")
    inputs = read_inputs([main], [extra])
    assert inputs.requirements.text == (
        "--require-hashes\nalpha>=1 \\\n  --hash=sha256:" + "a" * 64 + "\nbeta\nzeta\n"
    )
    assert inputs.constraints.text == "delta==1\ngamma<3\neta!=2\n"  # -r in a constraints file
    # The server's line numbers, told back as the file and line they came from.
    assert inputs.where("requirements line 3: bad") == f"{tmp_path / 'sub' / 'a.txt'} line 2: bad"
    assert inputs.where("requirements line 5: bad") == f"{main} line 5: bad"
    assert inputs.where("constraints line 2: bad") == f"{tmp_path / 'sub' / 'c.txt'} line 2: bad"
    assert inputs.where("the requirements name no project") == "the requirements name no project"
    (tmp_path / "url.txt").write_text("-r https://example.invalid/r.txt\n")
    with pytest.raises(RequirementsFileError, match="only local files can be included"):
        read_inputs([tmp_path / "url.txt"], [])
    (tmp_path / "missing.txt").write_text("-r nowhere.txt\n")
    with pytest.raises(RequirementsFileError, match=r"cannot read .*nowhere\.txt"):
        read_inputs([tmp_path / "missing.txt"], [])
