"""Every test that the docs name exists, so the "what we guarantee" tables cannot rot.

``docs/guarantees.md`` names tests as `` `tests/FILE.py::test_name` `` and, later in the same
row, `` `::test_name` `` (same file); other pages' tables name them bare (`` `test_name` ``).
Each must be a test function defined in that file (or, bare, in some file under ``tests/``).
Bare names in prose are not read: `` `test_fraction` `` there is an option.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUARANTEES = ROOT / "docs" / "guarantees.md"
_CITED = re.compile(r"`(tests/[\w/]+\.py)?(?:::(test_\w+))?`")
_BARE = re.compile(r"`(test_\w+)`")


@functools.cache
def _tests_in(path: Path) -> frozenset[str]:
    """Names of the test functions defined in ``path`` (top level or in a class)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def cited_tests(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, file, test or None)`` for each test a page names; ``::name`` takes the file
    named last on its line."""
    cited: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        current: str | None = None
        for match in _CITED.finditer(line):
            path, name = match.groups()
            if path is None and name is None:
                continue
            if path is not None:
                current = path
            assert current is not None, f"line {number}: `::{name}` before any file is named"
            cited.append((number, current, name))
    return cited


def test_the_parser_reads_both_forms() -> None:
    row = "| x | `tests/a.py::test_one`, `::test_two`, `tests/b.py` | `other` |"
    assert cited_tests(row) == [
        (1, "tests/a.py", "test_one"),
        (1, "tests/a.py", "test_two"),
        (1, "tests/b.py", None),
    ]


def test_every_test_named_in_guarantees_md_exists() -> None:
    cited = cited_tests(GUARANTEES.read_text(encoding="utf-8"))
    assert len(cited) > 80  # the page's tables, not an empty parse
    missing = []
    for line, file, name in cited:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"line {line}: {file} does not exist")
        elif name is None and not _tests_in(path):
            missing.append(f"line {line}: {file} holds no test")
        elif name is not None and name not in _tests_in(path):
            missing.append(f"line {line}: {file} has no {name}")
    assert not missing, "\n".join(missing)


def test_every_probe_row_names_a_test() -> None:
    text = GUARANTEES.read_text(encoding="utf-8")
    section = text.split("## Probes kept as tests", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, len(rows) + 1))
    assert len(rows) >= 44  # issue 21: items 1-23, the scikit-learn defaults, the held probes
    for row in rows:
        assert cited_tests(row), row


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_bare_test_name_in_a_docs_table_exists(page: Path) -> None:
    defined = set().union(*(_tests_in(p) for p in (ROOT / "tests").rglob("test_*.py")))
    rows = [line for line in page.read_text(encoding="utf-8").splitlines() if line[:1] == "|"]
    named = {m.group(1) for row in rows for m in _BARE.finditer(row)}
    assert not named - defined, sorted(named - defined)
