"""The project's import graph, read from the code (ast), for the layout and DVC-deps tests."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The file of ``emoprune.x.y`` (a module or a package's __init__), or None."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(path: Path) -> set[str]:
    """The emoprune modules ``path`` imports, at any depth of the file (lazy imports count)."""
    found: set[str] = set()
    package = module_name(path) if path.is_relative_to(SRC) else ""
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # ``from .lpq import lpq`` inside a package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from emoprune.pipeline import tracking`` imports the submodule tracking.
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "emoprune" and module_file(n)}
    return found


def package_chain(name: str) -> list[str]:
    """``emoprune.a.b`` -> [emoprune, emoprune.a]: the packages Python imports on the way."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(path: Path) -> set[Path]:
    """Every project file that running ``path`` can import, directly or not."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            for mod in (*package_chain(name), name):
                f = module_file(mod)
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)
