"""Inspect a built wheel inside its build image, with the image's build tools (auditwheel).

Run by the build steps as ``/opt/buildtools/bin/python inspect_in_container.py WHEEL
[--repair OUTDIR]``. It prints a human-readable report, then one line
``WHEELFARM-INSPECT {json}`` that the caller parses:

- ``auditwheel``: the output of ``auditwheel show --json`` (None for a pure wheel, or a
  wheel with no ELF file);
- ``compiled``: whether the wheel holds an ELF file (None for a pure wheel): a wheel with a
  platform tag and none is valid, e.g. a C extension that fell back to pure Python;
- ``libraries``: every shared library the wheel's ELF files load from the system
  (``ldd``: the whole closure), soname -> path, without glibc's own loader and vdso;
- ``needed``: the sonames the wheel's own ELF files name in DT_NEEDED and the wheel does
  not ship: what a runtime image must provide;
- ``external``: the sonames ``auditwheel`` counts as external (not in any manylinux policy);
- ``packages``: soname -> the Debian/Ubuntu package that ships it (``dpkg -S``);
- ``repaired``: the wheel file names ``auditwheel repair`` wrote (with ``--repair``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MARKER = "WHEELFARM-INSPECT "
LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)")


def is_pure(wheel: str) -> bool:
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.count("/") == 1 and name.endswith(".dist-info/WHEEL"):
                text = zf.read(name).decode()
                return "root-is-purelib: true" in text.lower()
    return False


def elf_files(root: str) -> list[str]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    found.append(path)
    return sorted(found)


def system_libraries(tmp: str) -> dict[str, str]:
    """soname -> path of each system library the ELF files under ``tmp`` load (via ldd)."""
    libraries: dict[str, str] = {}
    for path in elf_files(tmp):
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            match = LDD_LINE.match(line)
            if not match or match.group(2) == "not":
                continue
            soname, where = match.groups()
            if not where.startswith(tmp):
                libraries[soname] = where
        for line in out.stdout.splitlines():
            if "=> not found" in line:
                libraries[line.split()[0]] = ""
    return libraries


def directly_needed(tmp: str) -> list[str]:
    """The DT_NEEDED sonames of the ELF files under ``tmp`` that no file there provides."""
    from auditwheel.elfutils import elf_read_dt_needed  # the image's build tools

    found = elf_files(tmp)
    shipped = {os.path.basename(path) for path in found}
    needed = {soname for path in found for soname in elf_read_dt_needed(Path(path))}
    return sorted(needed - shipped)


def dpkg_owner(path: str) -> str | None:
    """The package owning ``path``: tried as given, resolved, and across the /usr merge."""
    real = os.path.realpath(path)
    candidates = [path, real]
    for candidate in (path, real):
        if candidate.startswith("/usr/"):
            candidates.append(candidate[4:])
        else:
            candidates.append("/usr" + candidate)
    for candidate in dict.fromkeys(candidates):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout:
            first = out.stdout.splitlines()[0]
            package = first.split(": ", 1)[0].split(",")[0].strip()
            return package.split(":")[0]  # drop the :amd64 qualifier
    return None


def main(argv: list[str]) -> int:
    wheel = argv[0]
    repair_dir = argv[argv.index("--repair") + 1] if "--repair" in argv else None
    report: dict[str, object] = {
        "auditwheel": None,
        "compiled": None,
        "libraries": {},
        "needed": [],
        "external": [],
        "packages": {},
        "repaired": [],
    }
    if is_pure(wheel):
        print(f"{os.path.basename(wheel)} is a pure wheel: nothing to inspect")
        print(MARKER + json.dumps(report), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        if not elf_files(tmp):
            print(
                f"{os.path.basename(wheel)} has a platform tag but no compiled code (no ELF"
                " file): built without compiled code"
            )
            report["compiled"] = False
            print(MARKER + json.dumps(report), flush=True)
            return 0
        libraries = system_libraries(tmp)
        needed = directly_needed(tmp)
    show = subprocess.run(["auditwheel", "show", "--json", wheel], capture_output=True, text=True)
    sys.stdout.write(show.stderr)
    if show.returncode != 0:
        print(f"auditwheel show failed ({show.returncode})")
        return show.returncode
    audit = json.loads(show.stdout)
    print(f"auditwheel: {audit.get('wheel')} is consistent with {audit.get('overall_tag')}")
    print(f"auditwheel: symbol versions allow {audit.get('sym_tag')}")
    print(f"auditwheel: external libraries: {audit.get('external_libs') or 'none'}")
    packages = {soname: dpkg_owner(path) for soname, path in libraries.items() if path}
    for soname, path in sorted(libraries.items()):
        how = "needs" if soname in needed else "loads"
        print(f"{how} {soname} ({path or 'NOT FOUND'}) from package {packages.get(soname)}")
    report.update(
        auditwheel=audit,
        compiled=True,
        libraries=libraries,
        needed=needed,
        external=sorted(audit.get("external_libs") or {}),
        packages=packages,
    )
    if repair_dir:
        before = set(os.listdir(repair_dir)) if os.path.isdir(repair_dir) else set()
        repair = subprocess.run(["auditwheel", "repair", "-w", repair_dir, wheel])
        if repair.returncode != 0:
            print(f"auditwheel repair failed ({repair.returncode})")
            print(MARKER + json.dumps(report), flush=True)
            return repair.returncode
        report["repaired"] = sorted(set(os.listdir(repair_dir)) - before)
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
