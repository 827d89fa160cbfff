"""The layout holds: layers import downwards only, DVC deps cover every module a stage runs,
stage scripts stay thin, and nothing cites a document a clone lacks."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import REPO
from imports import SRC, closure, imports_of, module_file, module_name
from stage_deps import stage_code_deps

STAGES = sorted((REPO / "stages").glob("*.py"))
# Bottom to top: a room may import the rooms below it and itself, never one above it.
LAYERS = [
    {"emoprune", "emoprune.errors", "emoprune.choices"},
    {"emoprune.data", "emoprune.features", "emoprune.models"},
    {"emoprune.evaluation"},
    {"emoprune.training"},
    {"emoprune.pruning"},
    {"emoprune.pipeline"},
    {"emoprune.predict", "emoprune.cli", "emoprune.plots_page"},
]


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def level(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if room(module) in names)


PACKAGE = sorted(p for p in (SRC / "emoprune").rglob("*.py"))


def test_every_module_sits_in_a_known_room():
    assert all(level(module_name(p)) >= 0 for p in PACKAGE)


@pytest.mark.parametrize("path", PACKAGE, ids=lambda p: module_name(p))
def test_rooms_import_downwards_only(path):
    me = module_name(path)
    upward = [m for m in imports_of(path) if level(m) > level(me)]
    assert not upward, f"{me} climbs back up the layers: imports {upward}"


def test_no_module_imports_a_module_that_imports_it_back():
    modules = {module_name(p): p for p in PACKAGE}
    for name, path in modules.items():
        for other in imports_of(path):
            if other in modules and other != name and name in imports_of(modules[other]):
                pytest.fail(f"{name} and {other} import each other")


def _covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.stem)
def test_dvc_deps_cover_every_module_the_stage_imports(script):
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][script.stem]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    assert f"stages/{script.name}" in deps
    missing = [
        str(f.relative_to(REPO))
        for f in closure(script)
        if not _covered(str(f.relative_to(REPO)), deps)
    ]
    assert not missing, (
        f"dvc.yaml {script.stem} misses deps {missing}; "
        f"`python tests/stage_deps.py` prints the complete list"
    )


def test_the_deps_helper_lists_what_dvc_yaml_holds():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for script in STAGES:
        deps = [d for d in stages[script.stem]["deps"] if isinstance(d, str)]
        code = [d for d in deps if d.startswith("src/")]
        assert code == stage_code_deps(script), script.stem


def test_import_closure_follows_relative_and_lazy_imports():
    # features/__init__ imports .lpq relatively; cli imports pipeline.sweep inside a function.
    assert module_file("emoprune.features.lpq") in closure(REPO / "stages/features.py")
    assert module_file("emoprune.pipeline.sweep") in closure(SRC / "emoprune/cli.py")


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.stem)
def test_stage_scripts_stay_thin(script):
    # Logic belongs in src/emoprune, where it is unit-tested; a stage wires it together.
    assert len(script.read_text().splitlines()) <= 70


def test_nothing_cites_a_document_a_clone_lacks():
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        path = REPO / name
        if path.suffix in {".py", ".md", ".yaml", ".toml", ".txt", ""} and path.is_file():
            text = path.read_text(errors="ignore")
            for doc in ("DESIGN" + ".md", "PAPER" + ".md"):
                assert doc not in text, f"{name} cites {doc}"


def test_the_stages_that_read_the_frames_depend_on_the_folder_data_raw_names(tmp_path):
    # data.raw pointed at a copy outside the project: DVC must hash that folder, not data/raw.
    from dvc.repo import Repo

    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    frames = tmp_path.parent / f"{tmp_path.name}-sfew"
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["data"]["raw"] = str(frames)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    Repo.init(tmp_path, no_scm=True)
    with Repo(tmp_path) as repo:
        reading = {
            stage.name
            for stage in repo.index.stages
            if any(dep.def_path == str(frames) for dep in stage.deps)
        }
    assert reading == {"ingest", "resize"}
