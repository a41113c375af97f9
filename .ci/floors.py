"""Print pip constraints that pin every declared dependency to its floor.

    python .ci/floors.py [EXTRA ...] > floors.txt

Reads ``pyproject.toml``: the core ``dependencies`` and the named extras. Each requirement must
state its floor as ``>=X``; it is printed as ``name==X`` (a ``>=X`` without one is an error, so
that no dependency escapes the minimum-versions job). Self-references (``emdloss[...]``) are
followed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def floors(extras: list[str]) -> dict[str, str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    pins: dict[str, str] = {}
    todo = [("dependencies", r) for r in project["dependencies"]]
    seen: set[str] = set()
    for extra in extras:
        if extra not in optional:
            raise SystemExit(
                f"floors.py: no extra {extra!r} in pyproject.toml ({sorted(optional)})"
            )
        todo += [(extra, r) for r in optional[extra]]
    while todo:
        where, text = todo.pop(0)
        req = Requirement(text)
        if req.name == project["name"]:
            for extra in sorted(req.extras - seen):
                seen.add(extra)
                todo += [(extra, r) for r in optional[extra]]
            continue
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if len(lows) != 1:
            raise SystemExit(f"floors.py: {text!r} in {where} needs exactly one '>=' floor")
        pins[req.name] = lows[0]
    return pins


def main(argv: list[str]) -> int:
    for name, version in sorted(floors(argv).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
