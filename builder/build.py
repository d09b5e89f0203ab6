"""Build one sdist into a wheel for one platform: the steps a worker runs.

``build_wheel`` takes an sdist already downloaded and hash-checked (see
:func:`builder.fetch.fetch_with_hash`) and runs three steps, each in a fresh container:

1. **build**: ``pip wheel --no-deps`` (or the project's own command) as the non-root
   ``builder`` user, the sdist mounted read-only, an output folder read-write, the platform's
   index as the only index (build dependencies come through it), ``SOURCE_DATE_EPOCH`` set,
   and the memory/cpu/time limits of the platform's ``[build]`` table;
2. **inspect**: ``auditwheel show`` plus ``ldd``/``dpkg -S`` in the same image: the system
   shared libraries the wheel loads and the OS packages that ship them (what a runtime image
   must ``apt-get install``); ``auditwheel repair`` when the platform asks for manylinux;
3. **import**: install the wheel into a fresh venv in a second container and import its
   top-level modules.

Projects that need extra OS packages at build time get a derived image with them
(:func:`builder.images.ensure_image_with_packages`), built once per package set; the build
itself never runs as root.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename

from builder.classify import FailureCategory, classify_log, first_match, limits_hit
from builder.images import ToolsIndex, ensure_image_with_packages
from builder.index_gateway import index_access
from builder.runners import (
    ContainerRunner,
    Limits,
    Mount,
    OutputSink,
    Runner,
    RunResult,
)
from builder.wheels import compiled_sources, requires_dist, sdist_epoch, top_level_modules
from platforms import Platform

INSPECT_SCRIPT = Path(__file__).resolve().parent / "inspect_in_container.py"
ENTRY_SCRIPT = Path(__file__).resolve().parent / "container_entry.py"
INSPECT_MARKER = "WHEELFARM-INSPECT "
# Packages every runtime image of a platform has anyway: not worth listing.
ALWAYS_PRESENT_PACKAGES = frozenset({"libc6", "libc6-i386", "libc-bin"})
DEFAULT_BUILD_TIMEOUT = 900.0
CHECK_TIMEOUT = 300.0  # for the inspect and import steps
CHECK_LIMITS = Limits(memory="1g", cpus=1.0, pids=512)
# Environment names the build steps set themselves; a project's env cannot override them.
RESERVED_ENV = frozenset(
    {
        "HOME",
        "TMPDIR",
        "PATH",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "PIP_BUILD_CONSTRAINT",
        "PIP_CERT",
        "PIP_CONFIG_FILE",
        "SSL_CERT_FILE",
        "SOURCE_DATE_EPOCH",
        "SDIST",
        "OUTPUT_DIR",
        "PROJECT",
    }
)

# Paths inside the containers.
IN_DIR = "/work/in"
OUT_DIR = "/work/out"
REPAIRED_DIR = "/work/repaired"
CA_PATH = "/work/ca.crt"
INSPECT_PATH = "/work/bin/inspect_wheel.py"
ENTRY_PATH = "/work/bin/container_entry.py"
TOOLS_PYTHON = "/opt/buildtools/bin/python"


@dataclass(frozen=True)
class BuildSettings:
    """What one project needs beyond the defaults (kept per project by the server)."""

    build_constraints: str = ""  # a constraints file's text, given as PIP_BUILD_CONSTRAINT
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. CFLAGS; not RESERVED_ENV
    apt_packages: Sequence[str] = ()  # OS packages at build time (a derived image)
    # A shell command instead of `pip wheel`; it finds $SDIST, $OUTPUT_DIR, $PROJECT and
    # $PIP_INDEX_URL in its environment and must leave the wheel in $OUTPUT_DIR.
    build_command: str = ""
    import_names: Sequence[str] | None = None  # None: from the wheel; (): skip the check
    timeout: float | None = None  # seconds; None: the platform's [build] timeout

    def __post_init__(self) -> None:
        reserved = sorted(set(self.env) & RESERVED_ENV)
        if reserved:
            raise ValueError(f"build settings cannot set {', '.join(reserved)}")


@dataclass
class BuildResult:
    ok: bool
    category: FailureCategory | None  # None when ok
    wheels: list[Path]  # in output_dir: repaired ones when the platform asks for manylinux
    log: str  # every step's output, with a header per step
    timings: dict[str, float]  # seconds: image, build, inspect, import, total
    image: str  # the image name the build ran in
    image_id: str
    # Debian/Ubuntu packages of the libraries the wheel's own ELF files link directly
    # (DT_NEEDED): what a runtime image must `apt-get install`.
    os_packages: list[str]
    shared_libraries: dict[str, str]  # soname -> path in the image ("" when not found)
    external_libraries: list[str]  # sonames outside every manylinux policy (auditwheel)
    audit: dict[str, object] | None = None  # `auditwheel show --json` of the built wheel
    summary: str = ""  # one line saying what went wrong
    # The packages of every library the wheel loads (ldd's closure), for the build's detail.
    os_packages_closure: list[str] = field(default_factory=list)
    # Whether a wheel with a platform tag holds compiled code (an ELF file); None when the
    # wheel is pure or no wheel was inspected. False: e.g. a C extension fell back to Python.
    compiled: bool | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "category": self.category.value if self.category else None,
            "wheels": [p.name for p in self.wheels],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "image": self.image,
            "image_id": self.image_id,
            "os_packages": self.os_packages,
            "shared_libraries": self.shared_libraries,
            "external_libraries": self.external_libraries,
            "os_packages_closure": self.os_packages_closure,
            "compiled": self.compiled,
            "summary": self.summary,
        }


def build_limits(platform: Platform, settings: BuildSettings) -> tuple[Limits, float]:
    timeout = settings.timeout
    if timeout is None:
        timeout = float(platform.build_limits.get("timeout", DEFAULT_BUILD_TIMEOUT))  # type: ignore[arg-type]
    return Limits.from_platform(platform), timeout


class _Log:
    """The build's log: kept whole for the result, and streamed to ``sink`` as it happens."""

    def __init__(self, sink: OutputSink | None = None) -> None:
        self.parts: list[str] = []
        self.sink = sink

    def begin(self, name: str) -> None:
        if self.sink:
            self.sink(f"===== {name}\n")

    def step(self, name: str, result: RunResult) -> None:
        status = "timed out" if result.timed_out else f"exit {result.exit_code}"
        self.parts.append(f"===== {name} ({result.duration:.1f} s, {status})\n{result.log}")
        if self.sink:  # the step's output went to the sink while it ran
            tail = "" if result.log.endswith("\n") or not result.log else "\n"
            self.sink(f"{tail}----- {name}: {result.duration:.1f} s, {status}\n")

    def note(self, text: str) -> None:
        self.parts.append(f"===== {text}\n")
        if self.sink:
            self.sink(f"===== {text}\n")

    def text(self) -> str:
        return "\n".join(self.parts)


def build_wheel(
    platform: Platform,
    sdist: Path,
    index_url: str,
    output_dir: Path,
    *,
    settings: BuildSettings | None = None,
    engine: str = "podman",
    runner: Runner | None = None,
    image: str | None = None,
    ca_bundle: Path | None = None,
    tools_index: ToolsIndex | None = None,
    on_output: OutputSink | None = None,
) -> BuildResult:
    """Build ``sdist`` for ``platform``; wheels land in ``output_dir``.

    ``index_url`` is the platform's Simple index: the only index the build and the import
    check use. ``ca_bundle`` is mounted for pip when that index needs a CA the image lacks.
    ``image`` skips image resolution (e.g. a pre-pulled image, or anything for a
    :class:`~builder.runners.HostRunner`); otherwise the platform's build image (plus the
    project's apt packages) is made or reused with ``engine``.
    """
    settings = settings or BuildSettings()
    started = time.monotonic()
    timings: dict[str, float] = {}
    log = _Log(on_output)
    sdist = Path(sdist).resolve()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    project = str(canonicalize_name(parse_sdist_filename(sdist.name)[0]))

    image_id = ""
    if image is None:
        t0 = time.monotonic()
        image, image_id = ensure_image_with_packages(
            platform, settings.apt_packages, engine, tools_index=tools_index
        )
        timings["image"] = time.monotonic() - t0
    runner = runner or ContainerRunner(engine)

    def finish(category: FailureCategory | None, summary: str = "", **found: object) -> BuildResult:
        timings["total"] = time.monotonic() - started
        return BuildResult(
            ok=category is None,
            category=category,
            wheels=list(found.get("wheels", [])),  # type: ignore[call-overload]
            log=log.text(),
            timings=timings,
            image=str(image),
            image_id=image_id,
            os_packages=list(found.get("os_packages", [])),  # type: ignore[call-overload]
            shared_libraries=dict(found.get("shared_libraries", {})),  # type: ignore[call-overload]
            external_libraries=list(found.get("external_libraries", [])),  # type: ignore[call-overload]
            audit=found.get("audit"),  # type: ignore[arg-type]
            summary=summary,
            os_packages_closure=list(found.get("os_packages_closure", [])),  # type: ignore[call-overload]
            compiled=found.get("compiled"),  # type: ignore[arg-type]
        )

    with tempfile.TemporaryDirectory(prefix="wheelfarm-build-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        # The index, and nothing else, is reachable from the build (see index_gateway).
        index = stack.enter_context(
            index_access(runner.isolates_network, index_url, work / "gateway")
        )
        out = work / "out"
        repaired = work / "repaired"
        # A copy in the work folder: a worker in a container talks to the host's Docker
        # daemon, which can mount only what is on the host (the work folder is shared).
        inspect_script = work / "inspect_wheel.py"
        shutil.copyfile(INSPECT_SCRIPT, inspect_script)
        entry_script = work / "container_entry.py"
        shutil.copyfile(ENTRY_SCRIPT, entry_script)

        def contained(command: Sequence[str], with_index: bool) -> tuple[list[str], list[Mount]]:
            """A step that runs the project's code: behind the container entry, which keeps
            it within its limits and (``with_index``) opens the index gateway."""
            if not runner.isolates_network:
                return list(command), []
            gateway = list(index.entry_args) if with_index else []
            mounts = [Mount(entry_script, ENTRY_PATH), *(index.mounts if with_index else ())]
            return [TOOLS_PYTHON, ENTRY_PATH, *gateway, "--", *command], mounts

        for folder in (out, repaired):
            folder.mkdir()
            folder.chmod(0o777)  # written by the container's builder user; `work` stays 0700
        mounts = [Mount(sdist, f"{IN_DIR}/{sdist.name}"), Mount(out, OUT_DIR, read_only=False)]
        env = {
            **settings.env,
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "PIP_INDEX_URL": index.url,
            "PIP_NO_INPUT": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "SOURCE_DATE_EPOCH": str(sdist_epoch(sdist)),
            "SDIST": f"{IN_DIR}/{sdist.name}",
            "OUTPUT_DIR": OUT_DIR,
            "PROJECT": project,
        }
        if settings.build_constraints:
            constraints = work / "build-constraints.txt"
            constraints.write_text(settings.build_constraints)
            mounts.append(Mount(constraints, f"{IN_DIR}/build-constraints.txt"))
            env["PIP_BUILD_CONSTRAINT"] = f"{IN_DIR}/build-constraints.txt"
        if ca_bundle is not None:
            mounts.append(Mount(Path(ca_bundle), CA_PATH))
            env["PIP_CERT"] = env["SSL_CERT_FILE"] = CA_PATH

        # 1. build
        if settings.build_command:
            command = ["sh", "-c", settings.build_command]
        else:
            command = [
                TOOLS_PYTHON,
                "-m",
                "pip",
                "wheel",
                "--verbose",
                "--no-deps",
                "--no-binary",
                project,
                "--index-url",
                index.url,
                "--wheel-dir",
                OUT_DIR,
                f"{IN_DIR}/{sdist.name}",
            ]
        limits, timeout = build_limits(platform, settings)
        command, entry_mounts = contained(command, with_index=True)
        log.begin("build")
        result = runner.run(
            image,
            command,
            mounts=mounts + entry_mounts,
            env=env,
            limits=limits,
            network=index.network,
            timeout=timeout,
            on_output=on_output,
            engine_platform=platform.engine_platform,
        )
        timings["build"] = result.duration
        log.step("build", result)
        built = sorted(out.glob("*.whl"))
        if not result.ok:
            category = classify_log(result.log, timed_out=result.timed_out)
            summary = first_match(result.log, category) or (
                f"time limit of {timeout:g} s passed" if result.timed_out else "build failed"
            )
            return finish(category, limit_summary(result.log, limits) or summary)
        if len(built) != 1:
            return finish(FailureCategory.OTHER, f"expected one wheel, found {len(built)}")
        wheel = built[0]
        if wheel.is_symlink() or not wheel.is_file():
            # Read here, on the host, a link would lead out of the container.
            return finish(FailureCategory.OTHER, f"{wheel.name} is not a regular file")

        # 2. inspect (and repair)
        inspect_mounts = [
            Mount(inspect_script, INSPECT_PATH),
            Mount(out, OUT_DIR),
        ]
        inspect_command = [TOOLS_PYTHON, INSPECT_PATH, f"{OUT_DIR}/{wheel.name}"]
        if platform.manylinux:
            inspect_mounts.append(Mount(repaired, REPAIRED_DIR, read_only=False))
            inspect_command += ["--repair", REPAIRED_DIR]
        log.begin("inspect")
        result = runner.run(
            image,
            inspect_command,
            mounts=inspect_mounts,
            env={"HOME": "/tmp", "TMPDIR": "/tmp"},
            limits=CHECK_LIMITS,
            network="none",
            timeout=CHECK_TIMEOUT * platform.slowdown,
            on_output=on_output,
            engine_platform=platform.engine_platform,
        )
        timings["inspect"] = result.duration
        log.step("inspect", result)
        report = _inspect_report(result.log)
        if not result.ok or report is None:
            return finish(FailureCategory.OTHER, "inspecting the wheel failed")
        libraries: dict[str, str] = dict(report.get("libraries") or {})  # type: ignore[call-overload]
        packages: dict[str, str | None] = dict(report.get("packages") or {})  # type: ignore[call-overload]
        needed = set(report.get("needed") or ())  # type: ignore[call-overload]

        def runtime_packages(sonames: object) -> list[str]:
            owners = {packages.get(str(soname)) for soname in sonames}  # type: ignore[attr-defined]
            return sorted(p for p in owners if p and p not in ALWAYS_PRESENT_PACKAGES)

        found: dict[str, object] = {
            "shared_libraries": libraries,
            "external_libraries": list(report.get("external") or []),  # type: ignore[call-overload]
            "os_packages": runtime_packages(needed),
            "os_packages_closure": runtime_packages(libraries),
            "audit": report.get("auditwheel"),
            "compiled": report.get("compiled"),
        }
        if report.get("compiled") is False:
            sources = compiled_sources(sdist)
            if sources:
                shown = ", ".join(sources[:5]) + (" ..." if len(sources) > 5 else "")
                log.note(
                    f"built without compiled code: the sdist has {len(sources)} compiled-language"
                    f" source file(s) ({shown}) but the wheel has no ELF file; its C extension"
                    " was not built (a missing -dev package or compiler, or an optional"
                    " extension that fell back to pure Python: see the build step above)"
                )
            else:
                log.note("built without compiled code: a platform tag and no ELF file")
        final = wheel
        if platform.manylinux and report.get("repaired"):
            final = repaired / str(report["repaired"][0])  # type: ignore[index]
        missing = sorted(name for name, path in libraries.items() if not path)
        if missing:
            return finish(
                FailureCategory.MISSING_SYSTEM_LIBRARY,
                f"the wheel needs libraries the image lacks: {', '.join(missing)}",
                **found,
            )

        # 3. install into a fresh venv in a second container and import
        names = (
            list(settings.import_names)
            if settings.import_names is not None
            else top_level_modules(final)
        )
        if names:
            final_dir = final.parent
            deps = requires_dist(final)
            sources = (["--index-url", index.url] if deps else ["--no-index"]) + [
                "--find-links",
                OUT_DIR,
            ]
            script = (
                'set -e; "$1" -m venv --without-pip /tmp/venv; shift; '
                f'{TOOLS_PYTHON} -m pip --python /tmp/venv/bin/python install "$@"; '
                "cd /tmp && /tmp/venv/bin/python -c "
                '\'import importlib, os; names = os.environ["IMPORT_NAMES"].split(); '
                '[importlib.import_module(n) for n in names]; print("imported", *names)\''
            )
            check_env = {"HOME": "/tmp", "TMPDIR": "/tmp", "IMPORT_NAMES": " ".join(names)}
            check, entry_mounts = contained(
                [
                    "sh",
                    "-c",
                    script,
                    "sh",
                    f"python{platform.python}",
                    *sources,
                    f"{OUT_DIR}/{final.name}",
                ],
                with_index=bool(deps),
            )
            check_mounts = [Mount(final_dir, OUT_DIR), *entry_mounts]
            if ca_bundle is not None:
                check_mounts.append(Mount(Path(ca_bundle), CA_PATH))
                check_env["PIP_CERT"] = CA_PATH
            log.begin(f"import {' '.join(names)}")
            result = runner.run(
                image,
                check,
                mounts=check_mounts,
                env=check_env,
                limits=CHECK_LIMITS,
                network=index.network if deps else "none",
                timeout=CHECK_TIMEOUT * platform.slowdown,
                on_output=on_output,
                engine_platform=platform.engine_platform,
            )
            timings["import"] = result.duration
            log.step(f"import {' '.join(names)}", result)
            if not result.ok:
                category = classify_log(result.log)
                if category not in (FailureCategory.NETWORK, FailureCategory.RESOURCE_LIMIT):
                    category = FailureCategory.IMPORT_FAILED
                last = [line for line in result.log.splitlines() if line.strip()]
                summary = limit_summary(result.log, CHECK_LIMITS)
                return finish(category, summary or (last[-1] if last else "import failed"), **found)
        else:
            log.note("import check skipped: no top-level modules")

        target = output_dir / final.name
        shutil.copyfile(final, target)
        found["wheels"] = [target]
        return finish(None, f"built {final.name}", **found)


def limit_summary(log: str, limits: Limits) -> str:
    """What a step that hit its memory or process limit is told ("" when it hit none)."""
    hit = limits_hit(log)
    if hit.get("memory"):
        return f"the build ran out of memory (limit {limits.memory}): it was killed"
    if hit.get("pids"):
        return f"the build hit the process limit ({limits.pids}): it was stopped"
    return ""


def _inspect_report(log: str) -> dict[str, object] | None:
    for line in reversed(log.splitlines()):
        if line.startswith(INSPECT_MARKER):
            return json.loads(line[len(INSPECT_MARKER) :])  # type: ignore[no-any-return]
    return None
