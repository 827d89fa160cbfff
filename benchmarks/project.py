"""A copy of this project in a fresh git repo, with a generated sample registered in DVC:
what the end-to-end benchmark and the end-to-end tests run `dvc repro` in."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SKIP = {"data.dvc", "dvc.lock"}


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files, without the lock, data.dvc and reports."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [
        f
        for f in out
        if f and f not in SKIP and not f.startswith("reports/") and (REPO / f).is_file()
    ]


def set_params(repo: Path, values: Mapping[str, Any]) -> None:
    """``{"cnn.epochs": 2}`` into repo/params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        *sections, key = dotted.split(".")
        node = params
        for s in sections:
            node = node.setdefault(s, {})
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for dvc and the stages: this venv first, no tracking settings leaking."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "EMOPRUNE_"))
    }
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def extract_revision(rev: str, dest: Path) -> None:
    """The project's files as committed at ``rev`` into ``dest``, without the lock, data.dvc
    and reports (as ``project_files``): an older version of the code to time against."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile() and m.name not in SKIP and not m.name.startswith("reports/")
        ]
        tar.extractall(dest, members=members, filter="data")


def make_project(
    dest: Path,
    fill_data: Callable[[Path], None],
    params: Mapping[str, Any] | None = None,
    env: dict | None = None,
    rev: str | None = None,
) -> Path:
    """Copy the project into ``dest`` (the working tree, or the commit ``rev``), apply
    ``params``, let ``fill_data(dest/"data"/"raw")`` put the frames there, register them with
    DVC and commit everything."""
    if rev is not None:
        extract_revision(rev, dest)
    for f in project_files() if rev is None else ():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    if params:
        set_params(dest, params)
    fill_data(dest / "data" / "raw")
    (dest / "data.dvc").write_text("outs:\n- path: data/raw\n")
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "commit", "-f", "-q", "data.dvc"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=emoprune",
            "-c",
            "user.email=dev@emoprune",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    ):
        subprocess.run(cmd, cwd=dest, env=env or clean_env(), check=True, capture_output=True)
    return dest
