"""Build images: one per platform, from its Dockerfile FROM the platform's base image.

``build_image`` always builds (``podman build``; layers are cached by the engine);
``ensure_image`` builds only when the image is missing or was made from another Dockerfile.
``ensure_image_with_packages`` derives a cached image with extra OS packages for projects
that need them (``apt-get install`` runs as root at image build time, so the build
container itself stays non-root and needs no package manager access).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.runners import run_engine
from platforms import DEBIAN_PACKAGE_RE, ENGINE_ARCH, Platform

IMAGE_REPOSITORY = "wheelfarm-build"
DOCKERFILE_LABEL = "org.wheelfarm.dockerfile-sha256"
PACKAGES_LABEL = "org.wheelfarm.extra-packages"
BASE_ID_LABEL = "org.wheelfarm.base-image-id"
PLATFORM_LABEL = "org.wheelfarm.platform"
DEFAULT_TOOLS_INDEX = "https://pypi.org/simple/"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where the CA bundle is mounted during `podman build` (left as an empty file in the image).
BUILD_CA_PATH = "/run/wheelfarm-pip-ca.crt"


class ImageError(RuntimeError):
    """An image could not be built or inspected; ``log`` has the engine's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class ToolsIndex:
    """Where ``pip`` in ``podman build`` gets the build tools: the only network it needs.

    ``url`` defaults to ``$WHEELFARM_TOOLS_INDEX_URL`` or PyPI. ``ca_bundle`` is mounted
    read-only for the pip step (the image's own CA store may lack this machine's CA);
    by default the host's bundle, for https indexes.
    """

    url: str = ""
    ca_bundle: Path | None = None
    trusted_host: str = ""
    build_tools: str = ""  # requirement specifiers; "" keeps the Dockerfile's default

    def resolved(self, engine: str = "podman") -> ToolsIndex:
        url = self.url or os.environ.get("WHEELFARM_TOOLS_INDEX_URL", DEFAULT_TOOLS_INDEX)
        bundle = self.ca_bundle
        # Only `podman build` can mount the host's bundle; with docker the base image's own
        # CA store must do (it does for public indexes).
        if bundle is None and engine == "podman" and url.startswith("https:"):
            bundle = HOST_CA_BUNDLE if HOST_CA_BUNDLE.exists() else None
        return ToolsIndex(url, bundle, self.trusted_host, self.build_tools)


BASE_RECIPE = Path(__file__).resolve().parent / "images" / "make-debian-base.sh"


def base_recipe_args(platform: Platform) -> list[str] | None:
    """make-debian-base.sh's arguments for the platform's base image; None when its TOML
    names no Debian suite (the base image comes from a registry)."""
    if not platform.debian_suite:
        return None
    packages = ",".join(platform.python_packages) or "python3,python3-dev,python3-venv"
    return [
        platform.base_image,
        platform.debian_suite,
        ENGINE_ARCH[platform.arch],
        packages,
    ]


def ensure_base_image(platform: Platform, engine: str = "podman") -> bool:
    """Make the platform's base image with debootstrap if it is missing (needs root; a
    foreign architecture also qemu-user-static). True if it was made now."""
    args = base_recipe_args(platform)
    if args is None or image_id(platform.base_image, engine) is not None:
        return False
    done = subprocess.run(
        ["bash", str(BASE_RECIPE), *args],
        env={**os.environ, "ENGINE": engine},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        text = done.stdout + done.stderr
        raise ImageError(f"making base image {platform.base_image} failed:\n{text[-3000:]}", text)
    return True


def image_name(platform: Platform) -> str:
    return f"{IMAGE_REPOSITORY}/{platform.name}:latest"


def dockerfile_digest(platform: Platform) -> str:
    """What the image is made from, apart from the index: Dockerfile, base, packages."""
    digest = hashlib.sha256(platform.dockerfile_path.read_bytes())
    digest.update(f"\0{platform.base_image}\0{' '.join(platform.system_packages)}".encode())
    return digest.hexdigest()


def image_id(name: str, engine: str = "podman") -> str | None:
    """The full id of a local image, or None when there is none of that name."""
    found = run_engine(engine, "image", "inspect", "--format", "{{.Id}}", name)
    if found.returncode != 0:
        return None
    return found.stdout.strip().splitlines()[0]


def image_label(name: str, label: str, engine: str = "podman") -> str | None:
    found = run_engine(engine, "image", "inspect", "--format", "{{json .Config.Labels}}", name)
    if found.returncode != 0:
        return None
    labels = json.loads(found.stdout.strip() or "null") or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def _run_build(engine: str, args: Sequence[str], what: str) -> None:
    with tempfile.NamedTemporaryFile("w+", prefix="wheelfarm-image-", suffix=".log") as log:
        done = subprocess.run(
            [engine, "build", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if done.returncode != 0:
            log.seek(0)
            text = log.read()
            raise ImageError(f"{engine} build of {what} failed:\n{text[-3000:]}", text)


def build_image(
    platform: Platform,
    engine: str = "podman",
    *,
    tools_index: ToolsIndex | None = None,
    build_args: Mapping[str, str] | None = None,
    tag: str | None = None,
) -> str:
    """Build ``wheelfarm-build/<platform>:latest`` and return its image id.

    The platform's ``base_image`` comes in as ``BASE_IMAGE``, its ``system_packages`` as
    ``SYSTEM_PACKAGES``; pip reaches ``tools_index`` through the host network.
    """
    index = (tools_index or ToolsIndex()).resolved(engine)
    name = tag or image_name(platform)
    args = {
        "BASE_IMAGE": platform.base_image,
        "SYSTEM_PACKAGES": " ".join(platform.system_packages),
        "PIP_INDEX_URL": index.url,
        "PIP_TRUSTED_HOST": index.trusted_host,
        **({"BUILD_TOOLS": index.build_tools} if index.build_tools else {}),
        **(build_args or {}),
    }
    command = [
        "--network=host",
        f"--platform={platform.engine_platform}",
        "--file",
        str(platform.dockerfile_path),
        "--tag",
        name,
        "--label",
        f"{DOCKERFILE_LABEL}={dockerfile_digest(platform)}",
    ]
    if index.ca_bundle is not None:
        if engine != "podman":
            raise ImageError(
                f"a CA bundle for the tools index needs `podman build --volume`; with {engine}, "
                "use an index the base image trusts (ca_bundle=None)"
            )
        command += ["--volume", f"{index.ca_bundle.resolve()}:{BUILD_CA_PATH}:ro"]
        args["PIP_CERT"] = BUILD_CA_PATH
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    with tempfile.TemporaryDirectory(prefix="wheelfarm-context-") as context:
        # An empty context: the Dockerfile copies nothing in.
        _run_build(engine, [*command, context], name)
    found = image_id(name, engine)
    if found is None:
        raise ImageError(f"{engine} built {name} but cannot find it")
    # The image this tag named before is now untagged: drop such leftovers (the engine keeps
    # any that a container still uses).
    run_engine(engine, "image", "prune", "--force", "--filter", f"label={DOCKERFILE_LABEL}")
    return found


def ensure_image(
    platform: Platform, engine: str = "podman", *, tools_index: ToolsIndex | None = None
) -> str:
    """The id of the platform's build image, building it if missing or out of date."""
    name = image_name(platform)
    current = image_id(name, engine)
    if current and image_label(name, DOCKERFILE_LABEL, engine) == dockerfile_digest(platform):
        return current
    return build_image(platform, engine, tools_index=tools_index)


def validate_packages(packages: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in packages if not DEBIAN_PACKAGE_RE.match(p)]
    if bad:
        raise ValueError(f"not Debian package names: {', '.join(bad)}")
    return tuple(sorted(set(packages)))


DERIVED_DOCKERFILE = """\
FROM {base}
USER root
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/*
USER builder
"""


# Each `podman image inspect` costs a tenth of a second of CPU: a worker that just checked
# an image trusts the answer for a short while instead of asking before every build.
CHECKED_FOR_SECONDS = 60.0
_checked: dict[tuple[str, str, tuple[str, ...]], tuple[float, tuple[str, str]]] = {}


def ensure_image_with_packages(
    platform: Platform,
    packages: Sequence[str],
    engine: str = "podman",
    *,
    tools_index: ToolsIndex | None = None,
) -> tuple[str, str]:
    """As :func:`_ensure_image_with_packages`, remembered for CHECKED_FOR_SECONDS."""
    key = (engine, platform.name, tuple(sorted(set(packages))))
    now = time.monotonic()
    recent = _checked.get(key)
    if recent and now - recent[0] < CHECKED_FOR_SECONDS:
        return recent[1]
    found = _ensure_image_with_packages(platform, packages, engine, tools_index=tools_index)
    _checked[key] = (now, found)
    return found


def _ensure_image_with_packages(
    platform: Platform,
    packages: Sequence[str],
    engine: str = "podman",
    *,
    tools_index: ToolsIndex | None = None,
) -> tuple[str, str]:
    """(name, id) of the build image plus extra OS packages, derived once and cached.

    Without packages that is the platform's build image itself. The derived image is named
    after a hash of the sorted package list and the base image id, so each set is built once
    per base image and rebuilt when the base image changes.
    """
    base_id = ensure_image(platform, engine, tools_index=tools_index)
    wanted = validate_packages(packages)
    if not wanted:
        return image_name(platform), base_id
    key = hashlib.sha256(f"{base_id}\0{' '.join(wanted)}".encode()).hexdigest()[:16]
    name = f"{IMAGE_REPOSITORY}/{platform.name}-extra:{key}"
    found = image_id(name, engine)
    if found:
        return name, found
    with tempfile.TemporaryDirectory(prefix="wheelfarm-context-") as context:
        dockerfile = Path(context) / "Dockerfile"
        dockerfile.write_text(
            DERIVED_DOCKERFILE.format(base=image_name(platform), packages=" ".join(wanted))
        )
        _run_build(
            engine,
            [
                "--network=host",
                f"--platform={platform.engine_platform}",
                "--file",
                str(dockerfile),
                "--tag",
                name,
                "--label",
                f"{PACKAGES_LABEL}={' '.join(wanted)}",
                "--label",
                f"{BASE_ID_LABEL}={base_id}",
                "--label",
                f"{PLATFORM_LABEL}={platform.name}",
                context,
            ],
            name,
        )
    found = image_id(name, engine)
    if found is None:
        raise ImageError(f"{engine} built {name} but cannot find it")
    remove_stale_derived_images(platform, base_id, engine)
    return name, found


def remove_stale_derived_images(platform: Platform, base_id: str, engine: str = "podman") -> None:
    """Remove the platform's derived images made from an older build image.

    Best effort: an image a container still uses stays (the engine refuses to remove it).
    """
    listed = run_engine(
        engine,
        "images",
        "--quiet",
        "--no-trunc",
        "--filter",
        f"label={PLATFORM_LABEL}={platform.name}",
    )
    for candidate in dict.fromkeys(listed.stdout.split()):
        if image_label(candidate, BASE_ID_LABEL, engine) not in (None, base_id):
            run_engine(engine, "rmi", candidate)  # no --force: that would stop its containers
