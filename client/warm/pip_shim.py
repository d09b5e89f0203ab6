"""Run pip's resolver as if on another platform (``python -m client.warm.pip_shim``).

pip evaluates environment markers against the interpreter it runs in, even with
``--python-version``/``--platform`` (those only choose wheel tags and the Requires-Python
check), and it refuses sdists whenever such options are given. For a dry run that only reads
metadata neither is needed, so this shim, before pip starts:

* makes ``packaging.markers.default_environment`` (pip's vendored copy) answer with the target
  platform's marker environment (ENV, a JSON object), and
* runs pip's own check of those options as if ``--only-binary=:all:`` were set, so sdists
  stay candidates; their metadata is prepared on this machine, as pip always does for sdists.

Everything else is pip's: the resolver, pre-release and yanked rules, constraints, hashes.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _patch(environment: dict[str, str]) -> None:
    from pip._vendor.packaging import markers

    host_environment = markers.default_environment

    def platform_environment() -> dict[str, str]:
        return {**host_environment(), **environment}

    markers.default_environment = platform_environment  # type: ignore[assignment]
    # Should a future pip evaluate markers some other way, fail rather than answer for the
    # wrong platform.
    probe = " and ".join(
        f"{key} == {environment[key]!r}"
        for key in ("python_version", "platform_machine", "sys_platform")
        if environment.get(key)
    )
    if probe and not markers.Marker(probe).evaluate():
        raise SystemExit("pip_shim: this pip does not evaluate markers through the shim")

    from pip._internal.cli import cmdoptions
    from pip._internal.models.format_control import FormatControl

    check = cmdoptions.check_dist_restriction

    def check_allowing_sdists(options: Any, check_target: bool = False) -> None:
        if not getattr(options, "dry_run", False):
            raise SystemExit("pip_shim: only dry runs may resolve for another platform")
        saved = options.format_control
        options.format_control = FormatControl(set(), {":all:"})
        try:
            check(options, check_target)
        finally:
            options.format_control = saved

    cmdoptions.check_dist_restriction = check_allowing_sdists


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m client.warm.pip_shim ENV_JSON -- PIP_ARGS", file=sys.stderr)
        return 2
    _patch(json.loads(argv[0]))
    from pip._internal.cli.main import main as pip_main

    return pip_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
