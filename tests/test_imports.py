"""Stage start-up: a stage imports only the heavy libraries it uses. torch, torchvision, mlflow,
sklearn and scipy.stats each take 0.4-1 s to import, paid by every stage run; the stages that
train nothing must not import torch at all (e.g. through ``training.crossval`` for the folds)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env
from imports import closure

TORCH = ("torch", "torchvision")
# stage: the top-level modules that importing its script must leave out of sys.modules.
NOT_IMPORTED = {
    # Runs before everything, outside MLflow: params only.
    "check_params": (*TORCH, "mlflow", "sklearn", "scipy", "matplotlib"),
    # sklearn is imported when the folds are assigned; scipy.stats only by the paired tests.
    "ingest": (*TORCH, "sklearn", "scipy.stats"),
    "resize": (*TORCH, "sklearn", "scipy.stats", "matplotlib"),
    "features": (*TORCH, "sklearn", "scipy.stats"),
    # Needs torch and torchvision (hub download, hash and shape check), never MLflow.
    "pretrained": ("mlflow", "sklearn", "matplotlib"),
    # torch, but torchvision (~1 s) only where a ResNet is built, and sklearn (~1 s) only for
    # the MLP's PCA (train_mlp imports it when it fits one) and the fold assignment (ingest).
    "train_mlp": ("torchvision", "sklearn"),
    "train_cnn": ("torchvision", "sklearn", "scipy.stats"),
    "prune_cnn": ("torchvision", "sklearn", "scipy.stats"),
    "evaluate": ("torchvision", "sklearn"),
}
TORCH_FREE = [s for s, names in NOT_IMPORTED.items() if "torch" in names]

PROBE = """
import json, runpy, sys
runpy.run_path(sys.argv[1], run_name="stage_under_test")  # not __main__: defines, runs nothing
print(json.dumps([m for m in sys.argv[2:] if m in sys.modules]))
"""


@pytest.mark.parametrize("stage", sorted(NOT_IMPORTED))
def test_stage_imports_no_library_it_does_not_use(stage):
    script = REPO / "stages" / f"{stage}.py"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(script), *NOT_IMPORTED[stage]],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert not loaded, f"importing stages/{stage}.py imports {loaded}"


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("stage", TORCH_FREE)
def test_no_code_a_torch_free_stage_runs_imports_torch(stage):
    # Also catches an import inside a function, which importing the script does not run.
    script = REPO / "stages" / f"{stage}.py"
    offenders = sorted(
        str(f.relative_to(REPO))
        for f in {script, *closure(script)}
        if third_party_imports(f) & set(TORCH)
    )
    assert not offenders, f"stages/{stage}.py runs code that imports torch: {offenders}"


def test_the_probe_sees_a_heavy_import():
    # The check above is only worth something if it can fail: train_mlp trains with torch.
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "stages/train_mlp.py"), "torch"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(proc.stdout.splitlines()[-1]) == ["torch"], proc.stderr[-2000:]
