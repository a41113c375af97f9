"""The import structure of ``src/emdloss`` (issue 19): one address per name, declared faces.

Read from the source with :mod:`ast` (nothing is imported), so the rules hold for every module,
including the ones whose extras are not installed:

- a private module (a name with a leading underscore) is private to the package that holds it
  and that package's subpackages: ``emdloss._atomic`` serves the whole library, but
  ``emdloss.training._build`` serves only ``emdloss.training``; other packages go through the
  package's face (its ``__init__``);
- a module other than a face re-exports nothing: it lists in ``__all__`` only names it defines,
  keeps no unused emdloss import alive with ``noqa: F401``, and does not consist only of
  imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PATHS = sorted((SRC / "emdloss").rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PATHS}
FACES = {_module_name(p) for p in PATHS if p.name == "__init__.py"}


def _package(module: str) -> str:
    return module if module in FACES else module.rsplit(".", 1)[0]


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """Every emdloss module an import statement names (``from a import b`` names ``a.b`` when
    that is a module), with its line."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("emdloss")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("emdloss"):
                continue
            found.append((node.module, node.lineno))
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    found.append((f"{node.module}.{alias.name}", node.lineno))
    return found


def private_imports_across_packages(importer: str, source: str) -> list[str]:
    """The imports of module ``importer`` that reach a private module of a package that does not
    hold it."""
    home = _package(importer)
    bad = []
    for target, line in _imports(ast.parse(source)):
        parts = target.split(".")
        for i, part in enumerate(parts[1:], start=1):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])  # the package the private module belongs to
                if home != owner and not home.startswith(owner + "."):
                    bad.append(f"{importer}:{line} imports {target} (private to {owner})")
                break
    return bad


def _top_level(tree: ast.Module) -> tuple[set[str], set[str], list[str] | None]:
    """Names a module defines, names it imports, and its ``__all__`` (None: none)."""
    defined: set[str] = set()
    imported: set[str] = set()
    exported: list[str] | None = None

    def visit(body: list[ast.stmt]) -> None:
        nonlocal exported
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    defined.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                    assert node.value is not None
                    exported = list(ast.literal_eval(node.value))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    defined.discard("__all__")
    return defined, imported, exported


def reexports(name: str, source: str) -> list[str]:
    """What a non-face module re-exports: imported names in ``__all__``, or only imports."""
    tree = ast.parse(source)
    defined, _, exported = _top_level(tree)
    bad = [
        f"{name} lists the imported name {n} in __all__" for n in exported or () if n not in defined
    ]
    emdloss_names = sum(
        len(node.names)
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emdloss")
    )
    for node in tree.body:  # an unused import kept alive by a lint waiver is a re-export too
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emdloss"):
            lines = source.splitlines()[node.lineno - 1 : node.end_lineno]
            if any("noqa: F401" in line for line in lines):
                bad.append(f"{name}:{node.lineno} keeps an unused import (noqa: F401)")
    if emdloss_names >= 3 and not defined:
        bad.append(f"{name} only imports ({emdloss_names} names) and defines nothing")
    return bad


def test_no_module_imports_a_private_module_of_another_package() -> None:
    bad = [
        line
        for path in PATHS
        for line in private_imports_across_packages(_module_name(path), path.read_text("utf-8"))
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", [p for p in PATHS if p.name != "__init__.py"], ids=_module_name)
def test_a_module_that_is_not_a_face_reexports_nothing(path: Path) -> None:
    assert not reexports(_module_name(path), path.read_text(encoding="utf-8"))


def test_every_face_name_resolves_to_a_module_of_its_package() -> None:
    # A face's lazy table (name -> module) points into its own package only.
    for face in FACES:
        tree = ast.parse(MODULES[face].read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                    assert node.value is not None
                    for value in ast.literal_eval(node.value).values():
                        module = value[0] if isinstance(value, tuple) else value
                        assert module in MODULES, (face, module)
                        assert module == face or module.startswith(face + "."), (face, module)


# The checks must be able to fail: each catches a planted example.
def test_the_checks_catch_what_they_forbid() -> None:
    source = "from emdloss.training._build import load_data\nfrom emdloss.training import _train\n"
    assert [t for t, _ in _imports(ast.parse(source))] == [
        "emdloss.training._build",
        "emdloss.training",
        "emdloss.training._train",
    ]
    assert len(private_imports_across_packages("emdloss.compare._x", source)) == 2
    assert private_imports_across_packages("emdloss.training.sub", source) == []  # its own
    shim = "from emdloss._atomic import write_json, write_text, atomic_write\n__all__ = ['write_json']\n"
    assert private_imports_across_packages("emdloss.compare._x", shim) == []  # the root's layer
    assert len(reexports("emdloss.compare._x", shim)) == 2  # a name in __all__; only imports
    waived = "from emdloss._atomic import write_json  # noqa: F401\nX = 1\n"
    assert len(reexports("emdloss.compare._x", waived)) == 1
