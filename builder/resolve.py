"""Resolve a requirements file for one platform, inside that platform's build container.

``resolve_requirements`` runs ``pip install --dry-run --ignore-installed --report`` with the
build image's own pip and CPython (``/opt/buildtools``: the platform's interpreter, so
markers and wheel tags are the platform's without emulation), the platform's index as the
only index (through the index gateway, as builds reach it: nothing else is reachable), and
the project build settings given: their build constraints as ``PIP_BUILD_CONSTRAINT`` for
every sdist whose metadata pip prepares, their OS packages in a derived image (e.g. a
``-dev`` package whose ``*-config`` an ``egg_info`` needs). The answer is pip's report: one
pin per distribution to install, and whether pip chose an sdist (a build to queue).

Failures are categorised: ``does_not_resolve`` (no set of versions fits, or a hash does
not match), ``metadata_build_failed`` (preparing an sdist's metadata failed: the summary
names the project), ``resolution_timeout``, ``network`` (the index did not answer), ``other``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from builder.build import (
    CA_PATH,
    ENTRY_PATH,
    ENTRY_SCRIPT,
    IN_DIR,
    OUT_DIR,
    TOOLS_PYTHON,
    BuildSettings,
)
from builder.images import ToolsIndex, ensure_image_with_packages
from builder.index_gateway import index_access
from builder.runners import ContainerRunner, Limits, Mount, OutputSink, Runner

DEFAULT_TIMEOUT = 600.0
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
REPORT = f"{OUT_DIR}/report.json"

_COLLECTING = re.compile(r"^Collecting (.+?)(?: \(from .*\))?\s*$")
_NO_VERSION = re.compile(
    r"(Could not find a version that satisfies the requirement .*|"
    r"No matching distribution found for .*|"
    r"Cannot install .* because these package versions have conflicting dependencies\.|"
    r"ResolutionImpossible.*)"
)
_METADATA = re.compile(
    r"(metadata-generation-failed|subprocess-exited-with-error|"
    r"Preparing metadata .* did not run successfully|"
    r"Getting requirements to build wheel did not run successfully|"
    r"pip subprocess to install build dependencies did not run successfully|"
    r"python setup\.py egg_info did not run successfully)"
)
_NETWORK = re.compile(
    r"(Failed to establish a new connection|Connection refused|Read timed out|"
    r"Max retries exceeded|HTTP error 5\d\d|Network is unreachable)"
)


@dataclass
class ResolveResult:
    ok: bool
    category: str | None  # an ERROR_CATEGORIES value (builder.protocol) when not ok
    summary: str
    closure: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    image: str = ""
    image_id: str = ""
    seconds: float = 0.0


def _project_of(spec: str) -> str:
    try:
        return str(canonicalize_name(Requirement(spec.split()[0]).name))
    except (InvalidRequirement, IndexError):
        return spec.split("==")[0].strip()


def classify(log: str, timed_out: bool, timeout: float) -> tuple[str, str]:
    """(category, one-line summary) of a failed resolution, from pip's output."""
    lines = [line.rstrip() for line in log.splitlines()]
    if timed_out:
        return "resolution_timeout", f"the resolution did not finish within {timeout:g} s"
    if any("DO NOT MATCH THE HASHES" in line for line in lines):
        shown = next((ln.strip() for ln in lines if "Expected sha256" in ln), "")
        names = [m.group(1) for ln in lines if (m := re.match(r"^\s+(\S+) from ", ln))]
        what = f" ({', '.join(names)})" if names else ""
        return "does_not_resolve", f"files do not match the hashes{what}: {shown}".strip()
    for index, line in enumerate(lines):
        if "In --require-hashes mode" in line:
            following = [ln.strip() for ln in lines[index + 1 : index + 3] if ln.strip()]
            return "does_not_resolve", " ".join([line.strip(), *following[:1]])
    project = ""
    for index, line in enumerate(lines):
        found = _COLLECTING.match(line.strip())
        if found:
            project = _project_of(found.group(1))
        if _METADATA.search(line):
            errors = [
                ln.strip()
                for ln in lines[index:]
                if re.search(r"(Error|error:|ERROR)", ln) and "did not run successfully" not in ln
            ]
            reason = errors[0] if errors else line.strip()
            return (
                "metadata_build_failed",
                f"preparing the metadata of {project or 'an sdist'} failed: {reason}",
            )
    for line in lines:
        if _NO_VERSION.search(line):
            return "does_not_resolve", line.strip().removeprefix("ERROR: ")
    for line in lines:
        if _NETWORK.search(line):
            return "network", line.strip()
    errors = [ln.strip() for ln in lines if ln.startswith("ERROR")]
    return "other", errors[-1] if errors else "pip failed"


def closure_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """pip's installation report as pins: name, version, file, whether it is an sdist."""
    pins = []
    for item in report.get("install", []):
        metadata = item["metadata"]
        url = (item.get("download_info") or {}).get("url", "")
        filename = unquote(urlsplit(url).path).rsplit("/", 1)[-1] or None
        direct = None
        if item.get("is_direct"):
            parts = urlsplit(url)
            direct = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        pins.append(
            {
                "name": str(canonicalize_name(metadata["name"])),
                "version": str(metadata["version"]),
                "filename": filename,
                "sdist": bool(filename and filename.endswith(SDIST_SUFFIXES)),
                "direct": direct,
            }
        )
    return pins


def resolve_requirements(
    platform: Any,
    requirements: str,
    constraints: str,
    index_url: str,
    *,
    settings: BuildSettings | None = None,
    engine: str = "podman",
    runner: Runner | None = None,
    image: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ca_bundle: Path | None = None,
    tools_index: ToolsIndex | None = None,
    on_output: OutputSink | None = None,
) -> ResolveResult:
    """The pinned closure of ``requirements`` (a requirements file's text) on ``platform``."""
    settings = settings or BuildSettings()
    started = time.monotonic()
    image_id = ""
    if image is None:
        image, image_id = ensure_image_with_packages(
            platform, settings.apt_packages, engine, tools_index=tools_index
        )
    runner = runner or ContainerRunner(engine)
    with tempfile.TemporaryDirectory(prefix="wheelfarm-resolve-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        index = stack.enter_context(
            index_access(runner.isolates_network, index_url, work / "gateway")
        )
        inputs = work / "in"
        inputs.mkdir()
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)  # written by the container's builder user
        (inputs / "requirements.txt").write_text(requirements + "\n")
        (inputs / "constraints.txt").write_text(constraints + "\n")
        mounts = [Mount(inputs, IN_DIR), Mount(out, OUT_DIR, read_only=False)]
        env = {
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "PIP_INDEX_URL": index.url,
            "PIP_NO_INPUT": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_CONFIG_FILE": "/dev/null",
        }
        if settings.build_constraints:
            (inputs / "build-constraints.txt").write_text(settings.build_constraints)
            env["PIP_BUILD_CONSTRAINT"] = f"{IN_DIR}/build-constraints.txt"
        if ca_bundle is not None:
            mounts.append(Mount(Path(ca_bundle), CA_PATH))
            env["PIP_CERT"] = env["SSL_CERT_FILE"] = CA_PATH
        command = [
            TOOLS_PYTHON,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--progress-bar=off",
            "--report",
            REPORT,
            "--index-url",
            index.url,
            "--requirement",
            f"{IN_DIR}/requirements.txt",
            "--constraint",
            f"{IN_DIR}/constraints.txt",
        ]
        if runner.isolates_network:
            entry = work / "container_entry.py"
            shutil.copyfile(ENTRY_SCRIPT, entry)
            command = [TOOLS_PYTHON, ENTRY_PATH, *index.entry_args, "--", *command]
            mounts += [Mount(entry, ENTRY_PATH), *index.mounts]
        if on_output:
            on_output("===== resolve\n")
        result = runner.run(
            image,
            command,
            mounts=mounts,
            env=env,
            limits=Limits.from_platform(platform),
            network=index.network,
            timeout=timeout,
            on_output=on_output,
            engine_platform=platform.engine_platform,
        )
        seconds = time.monotonic() - started
        report_path = out / "report.json"
        if result.ok and report_path.is_file() and not report_path.is_symlink():
            closure = closure_of(json.loads(report_path.read_text()))
            summary = f"resolved {len(closure)} distributions"
            return ResolveResult(True, None, summary, closure, result.log, image, image_id, seconds)
        category, summary = classify(result.log, result.timed_out, timeout)
        return ResolveResult(False, category, summary, [], result.log, image, image_id, seconds)
