"""`make repro`'s data steps: the sample goes only into data/raw, and only where data.raw reads it.

The real Makefile runs in a scratch folder with ``PY`` set to a wrapper that answers ``-c`` with
this interpreter and records ``-m`` (the generator) instead of spending a minute generating; the
venv stamp is emptied, so nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "Makefile", root)
    shutil.copy(REPO / "params.yaml", root)
    wrapper = tmp_path / "py"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ]; then echo "$@" >> "{tmp_path}/generated"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return root


def make(root: Path, *targets: str) -> subprocess.CompletedProcess:
    wrapper = root.parent / "py"
    return subprocess.run(
        ["make", "-s", *targets, "STAMP=", f"PY={wrapper}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def set_raw(root: Path, raw: str) -> None:
    text = (root / "params.yaml").read_text()
    assert "  raw: data/raw" in text
    (root / "params.yaml").write_text(text.replace("  raw: data/raw", f"  raw: {raw}", 1))


def generated(root: Path) -> list[str]:
    log = root.parent / "generated"
    return log.read_text().splitlines() if log.exists() else []


def test_default_raw_absent_generates_the_sample_into_data_raw(project):
    proc = make(project, "sample")
    assert proc.returncode == 0, proc.stderr
    assert "generating the SFEW-like sample" in proc.stdout
    assert generated(project) == ["-m emoprune.data.sample data/raw"]


@pytest.mark.parametrize("raw", ["data/raw", "./data/raw", "{root}/data/raw"])
def test_existing_data_raw_is_never_regenerated(project, raw):
    set_raw(project, raw.format(root=project))
    (project / "data" / "raw" / "Angry").mkdir(parents=True)
    proc = make(project, "sample")
    assert proc.returncode == 0, proc.stderr
    assert generated(project) == []
    assert "no sample generated" not in proc.stdout  # data.raw does name data/raw


def test_raw_elsewhere_generates_nothing_and_commits_nothing(project, tmp_path):
    elsewhere = tmp_path / "SFEW"
    set_raw(project, str(elsewhere))
    # `data` would run `dvc commit` on data/raw; there is no DVC repo here, so it must not.
    proc = make(project, "data")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"data.raw is {elsewhere}: no sample generated"
    assert generated(project) == []
    assert not (project / "data").exists() and not elsewhere.exists()


def test_unreadable_params_fall_back_to_data_raw(project):
    # check_params (in `dvc repro`) names what is wrong; the data step keeps the default folder.
    (project / "params.yaml").write_text("data: [\n")
    proc = make(project, "sample")
    assert proc.returncode == 0, proc.stderr
    assert generated(project) == ["-m emoprune.data.sample data/raw"]
