"""What a build target is: an OS release, a CPython version and an architecture.

Each platform is declared in a TOML file in this folder. From its fields we compute the
wheel tags its pip accepts, with ``packaging.tags``, so the index can tell which wheels a
platform can install.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from packaging import tags
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

DEFINITIONS_DIR = Path(__file__).resolve().parent

DEFAULT_DOCKERFILE = "images/Dockerfile"
DEBIAN_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]*[a-z0-9]$")
# Each architecture (as `uname -m` and wheel tags say it) and its name in OCI images
# (`podman run --platform linux/<name>`).
ENGINE_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "armv7l": "arm",
}
ARCHITECTURES = tuple(ENGINE_ARCH)
# manylinux aliases from PEP 599/571/513, for the architectures they were defined for.
LEGACY_MANYLINUX = {
    (2, 17): ("manylinux2014", ARCHITECTURES),
    (2, 12): ("manylinux2010", ("x86_64", "i686")),
    (2, 5): ("manylinux1", ("x86_64", "i686")),
}


class PlatformError(ValueError):
    """A platform definition is malformed."""


@dataclass(frozen=True)
class Platform:
    name: str
    os: str
    release: str
    python: str  # "3.11": the CPython version, major.minor
    arch: str
    glibc: str  # "2.36": the glibc of the OS release
    base_image: str
    manylinux: bool = False  # whether builds are repaired to a manylinux tag
    build_limits: Mapping[str, object] = field(default_factory=dict)
    # [image]: the build image's Dockerfile (relative to this folder) and extra OS packages.
    dockerfile: str = DEFAULT_DOCKERFILE
    system_packages: tuple[str, ...] = ()
    # Built under qemu-user on a host of another architecture: several times slower.
    emulated: bool = False
    # Retired: no new builds; its index and files stay readable until deleted.
    retired: bool = False
    # [image] how builder/images/make-debian-base.sh makes base_image: the Debian suite and
    # the Python packages ("" when the base image comes from a registry).
    debian_suite: str = ""
    python_packages: tuple[str, ...] = ()

    @property
    def dockerfile_path(self) -> Path:
        return DEFINITIONS_DIR / self.dockerfile

    @property
    def engine_platform(self) -> str:
        """The platform of its images for a container engine: ``linux/arm64``, ..."""
        return f"linux/{ENGINE_ARCH[self.arch]}"

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    @property
    def glibc_version(self) -> tuple[int, int]:
        major, minor = self.glibc.split(".")
        return int(major), int(minor)

    @property
    def interpreter(self) -> str:
        return "cp{}{}".format(*self.python_version)

    def platform_tags(self) -> list[str]:
        """Platform tags, best first, as pip on this platform would list them."""
        major, top_minor = self.glibc_version
        result = [f"linux_{self.arch}"]  # packaging lists it first too
        for minor in range(top_minor, 4, -1):
            result.append(f"manylinux_{major}_{minor}_{self.arch}")
            legacy = LEGACY_MANYLINUX.get((major, minor))
            if legacy and self.arch in legacy[1]:
                result.append(f"{legacy[0]}_{self.arch}")
        return result

    @cached_property
    def supported_tags(self) -> tuple[Tag, ...]:
        """Every tag this platform's pip accepts, in pip's order of preference."""
        plats = self.platform_tags()
        found = list(
            tags.cpython_tags(self.python_version, abis=[self.interpreter], platforms=plats)
        )
        found += tags.compatible_tags(self.python_version, self.interpreter, plats)
        return tuple(dict.fromkeys(found))

    @cached_property
    def tag_set(self) -> frozenset[Tag]:
        return frozenset(self.supported_tags)

    def accepts(self, wheel_tags: Iterable[Tag]) -> bool:
        """Whether a wheel with these tags installs on this platform."""
        return not self.tag_set.isdisjoint(wheel_tags)

    def accepts_wheel(self, filename: str) -> bool:
        return self.accepts(parse_wheel_filename(filename)[3])

    @property
    def builds_on_first_sight(self) -> bool:
        """Whether serving an sdist with no wheel here records a build request."""
        return not self.retired and bool(self.build_limits.get("on_first_sight", True))

    @property
    def slowdown(self) -> float:
        """How many times longer than native a step takes here ([build] slowdown): the
        lease and the check steps' time limits are stretched by it."""
        return float(self.build_limits.get("slowdown", 1))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "os": self.os,
            "release": self.release,
            "python": self.python,
            "arch": self.arch,
            "glibc": self.glibc,
            "base_image": self.base_image,
            "manylinux": self.manylinux,
            "emulated": self.emulated,
            "retired": self.retired,
            "build_timeout": self.build_limits.get("timeout"),
            "slowdown": self.slowdown,
            "platform_tags": self.platform_tags(),
            "tags_count": len(self.supported_tags),
            "best_tag": str(self.supported_tags[0]),
        }


def is_pure(wheel_tags: Iterable[Tag]) -> bool:
    """A pure wheel (platform ``any``) installs on every platform with a fitting Python."""
    return all(tag.platform == "any" for tag in wheel_tags)


def parse_platform(data: Mapping[str, object], source: str = "<platform>") -> Platform:
    def text(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise PlatformError(f"{source}: '{key}' must be a non-empty string")
        return value

    name = text("name")
    if not NAME_RE.match(name) or name in {"api", "files", "static", "simple"}:
        raise PlatformError(f"{source}: invalid platform name {name!r}")
    python, glibc, arch = text("python"), text("glibc"), text("arch")
    for key, value in (("python", python), ("glibc", glibc)):
        if not re.fullmatch(r"\d+\.\d+", value):
            raise PlatformError(f"{source}: '{key}' must look like 3.11, got {value!r}")
    if arch not in ARCHITECTURES:
        raise PlatformError(f"{source}: unknown architecture {arch!r}")
    limits = data.get("build", {})
    if not isinstance(limits, dict):
        raise PlatformError(f"{source}: [build] must be a table")
    image = data.get("image", {})
    if not isinstance(image, dict):
        raise PlatformError(f"{source}: [image] must be a table")
    dockerfile = image.get("dockerfile", DEFAULT_DOCKERFILE)
    if (
        not isinstance(dockerfile, str)
        or not dockerfile
        or dockerfile.startswith("/")
        or ".." in Path(dockerfile).parts
    ):
        raise PlatformError(f"{source}: [image] dockerfile must be a relative path in platforms/")
    packages = _package_list(image, "system_packages", source)
    python_packages = _package_list(image, "python_packages", source)
    suite = image.get("debian_suite", "")
    if not isinstance(suite, str) or not re.fullmatch(r"[a-z]*", suite):
        raise PlatformError(f"{source}: [image] debian_suite must be a Debian suite name")
    for key in ("emulated", "retired"):
        if not isinstance(data.get(key, False), bool):
            raise PlatformError(f"{source}: '{key}' must be true or false")
    slowdown = limits.get("slowdown", 1)
    if isinstance(slowdown, bool) or not isinstance(slowdown, int | float) or slowdown < 1:
        raise PlatformError(f"{source}: [build] slowdown must be a number >= 1")
    return Platform(
        name=name,
        os=text("os"),
        release=text("release"),
        python=python,
        arch=arch,
        glibc=glibc,
        base_image=text("base_image"),
        manylinux=bool(data.get("manylinux", False)),
        build_limits=limits,
        dockerfile=dockerfile,
        system_packages=packages,
        emulated=bool(data.get("emulated", False)),
        retired=bool(data.get("retired", False)),
        debian_suite=suite,
        python_packages=python_packages,
    )


def _package_list(table: Mapping[str, object], key: str, source: str) -> tuple[str, ...]:
    packages = table.get(key, [])
    if not isinstance(packages, list) or not all(
        isinstance(p, str) and DEBIAN_PACKAGE_RE.match(p) for p in packages
    ):
        raise PlatformError(f"{source}: [image] {key} must be Debian package names")
    return tuple(packages)


def load_platforms(directory: Path = DEFINITIONS_DIR) -> dict[str, Platform]:
    """Every ``*.toml`` platform in ``directory``, by name."""
    found: dict[str, Platform] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise PlatformError(f"{path.name}: invalid TOML: {exc}") from None
        platform = parse_platform(data, source=path.name)
        if path.stem != platform.name:
            raise PlatformError(f"{path.name}: file name must be the platform name")
        found[platform.name] = platform
    return found


def iter_platforms(names: Iterable[str], known: Mapping[str, Platform]) -> Iterator[Platform]:
    for name in names:
        if name not in known:
            raise PlatformError(f"unknown platform {name!r}; known: {', '.join(sorted(known))}")
        yield known[name]
