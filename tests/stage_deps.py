"""Which project code each DVC stage runs, as dvc.yaml deps: folders where a stage imports every
module of the folder, files elsewhere. ``python tests/stage_deps.py`` prints them."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO
from imports import SRC, closure


def stage_code_deps(script: Path) -> list[str]:
    """The smallest list of paths (relative to the repo) that covers ``script``'s imports."""
    used = closure(script)
    deps: list[str] = []
    for folder in sorted({f.parent for f in used}):
        files = sorted(f for f in used if f.parent == folder)
        whole = folder != SRC / "emoprune" and set(files) >= set(folder.glob("*.py"))
        deps += (
            [str(folder.relative_to(REPO))] if whole else [str(f.relative_to(REPO)) for f in files]
        )
    return deps


if __name__ == "__main__":
    for script in sorted((REPO / "stages").glob("*.py")):
        print(script.stem, *stage_code_deps(script), sep="\n  ", file=sys.stdout)
