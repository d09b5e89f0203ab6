"""Requirements files as text for the server: ``-r``/``-c`` includes inlined, nothing resolved.

``warm`` resolves nothing itself: it sends the text of its requirement and constraint files
to the server, which has a worker of the platform resolve it (index_server/resolutions.py).
Includes name files on this machine, so they are read here, as pip reads them: relative to
the including file, ``-r`` lines of a requirements file adding requirements, ``-c`` lines
adding constraints, and every include of a constraints file adding constraints. Every other
line (``--hash`` options, markers, global options) goes as it is; the server checks it.

Each line sent keeps where it came from, so that the server's "requirements line N" is
told back to the user as a file and its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

INCLUDES = {"-r": "r", "--requirement": "r", "-c": "c", "--constraint": "c"}
_COMMENT = re.compile(r"(^|\s+)#.*$")
_SERVER_LINE = re.compile(r"^(requirements|constraints) line (\d+):")


class RequirementsFileError(Exception):
    """An input file cannot be read, or includes itself; ``str()`` is one line."""


@dataclass
class Text:
    """The text of one kind of input (requirements or constraints), and each line's origin."""

    lines: list[str] = field(default_factory=list)
    origins: list[tuple[Path, int]] = field(default_factory=list)

    def add(self, line: str, path: Path, number: int) -> None:
        self.lines.append(line)
        self.origins.append((path, number))

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


@dataclass
class Inputs:
    """What ``POST /api/resolutions`` takes, read from local files."""

    requirements: Text = field(default_factory=Text)
    constraints: Text = field(default_factory=Text)

    def where(self, message: str) -> str:
        """The server's ``requirements line N: ...`` with N told as a file and its line."""
        found = _SERVER_LINE.match(message)
        if not found:
            return message
        text = self.requirements if found.group(1) == "requirements" else self.constraints
        number = int(found.group(2))
        if not 1 <= number <= len(text.origins):
            return message
        path, line = text.origins[number - 1]
        return f"{path} line {line}:{message[found.end() :]}"


def _include(line: str) -> tuple[str, str] | None:
    """("r" or "c", the file named) when the line is an include, else None."""
    stripped = _COMMENT.sub("", line).strip()
    for option, kind in INCLUDES.items():
        if stripped == option:
            raise RequirementsFileError(f"{option} needs a file name")
        for lead in (option + "=", option + " ", option + "\t"):
            if stripped.startswith(lead):
                return kind, stripped[len(lead) :].strip()
        if len(option) == 2 and stripped.startswith(option):  # -rfile.txt, as pip takes it
            return kind, stripped[2:].strip()
    return None


def _logical_lines(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, physical lines) of each logical line: ``\\`` continues one."""
    grouped: list[tuple[int, list[str]]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        pending.append(raw)
        if not raw.endswith("\\"):
            grouped.append((start, pending))
            pending = []
    if pending:
        grouped.append((start, pending))
    return grouped


def read_inputs(requirements: list[Path], constraints: list[Path]) -> Inputs:
    """The requirement and constraint files' text, their includes inlined."""
    inputs = Inputs()
    for path in requirements:
        _read(path, "r", inputs, ())
    for path in constraints:
        _read(path, "c", inputs, ())
    return inputs


def _read(path: Path, kind: str, inputs: Inputs, stack: tuple[Path, ...]) -> None:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise RequirementsFileError(f"{path} includes itself: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsFileError(f"cannot read {path}: {exc}") from None
    target = inputs.requirements if kind == "r" else inputs.constraints
    for number, physical in _logical_lines(text):
        joined = " ".join(p.removesuffix("\\") for p in physical)
        try:
            included = _include(joined)
        except RequirementsFileError as exc:
            raise RequirementsFileError(f"{path} line {number}: {exc}") from None
        if included is None:
            for offset, line in enumerate(physical):
                target.add(line, path, number + offset)
            continue
        what, name = included
        if "://" in name:
            raise RequirementsFileError(
                f"{path} line {number}: {name}: only local files can be included"
            )
        child = Path(name) if Path(name).is_absolute() else path.parent / name
        # In a constraints file every include holds constraints (as pip reads them).
        _read(child, "c" if kind == "c" else what, inputs, (*stack, resolved))
