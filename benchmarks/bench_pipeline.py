"""End to end: wall time and peak memory of the real `dvc repro` in a temporary copy.

- the default sample (20 frames per class) with the default params;
- a full-size SFEW-like sample (675 frames) with the default params (resnet18 on one fold);
- after that, `dvc exp run -S prune.threshold=20` as a fraction of the full run (only
  prune_cnn and evaluate rerun).
Peak RSS is the largest resident set of any stage process (getrusage of the children).
``smoke`` runs the tiny sample with tiny params: minutes, not hours, and no targets.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from emoprune.data import sample

REPO = Path(__file__).resolve().parents[1]
TINY = {"cv": {"folds": 2}, "cnn": {"epochs": 2, "checkpoint_every": 1},
        "prune": {"start_epoch": 1}, "mlp": {"epochs": 3}, "finetune": {"epochs": 1}}


def _sh(repo: Path, *cmd: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    start = time.perf_counter()
    subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _project(dest: Path, per_class: int, params: dict | None) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f in ("data.dvc", "dvc.lock") or f.startswith("reports/") or not (REPO / f).is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    if params:
        current = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params.items():
            current.setdefault(section, {}).update(values)
        (dest / "params.yaml").write_text(yaml.safe_dump(current, sort_keys=False))
    sample.generate(dest / "data" / "raw", per_class=per_class)
    (dest / "data.dvc").write_text("outs:\n- path: data/raw\n")
    for cmd in (["git", "init", "-q"], ["dvc", "commit", "-f", "-q", "data.dvc"],
                ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        _sh(dest, *cmd)
    return dest


def _pipeline(name: str, per_class: int, params: dict | None, exp: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="emoprune-bench-") as tmp:
        repo = _project(Path(tmp), per_class, params)
        wall = _sh(repo, "dvc", "repro")
        rows = [{"group": "end to end", "name": f"dvc_repro_{name}", "value": wall, "unit": "s",
                 "baseline": None, "ratio": None,
                 "note": f"{per_class} frames per class, {os.cpu_count()} cores"}]
        if exp:
            again = _sh(repo, "dvc", "exp", "run", "-S", "prune.threshold=20")
            rows.append({"group": "end to end", "name": f"exp_run_threshold_20_{name}",
                         "value": again, "unit": "s", "baseline": wall,
                         "ratio": again / wall,
                         "note": "only prune_cnn and evaluate rerun; ratio = fraction of the "
                                 "full run (target < 0.25)"})
    return rows


def run(smoke: bool = False) -> list[dict]:
    if smoke:
        rows = _pipeline("tiny", 4, TINY, exp=True)
    else:
        rows = _pipeline("default_sample", 20, None, exp=False)
        rows += _pipeline("full_size_675", 100, None, exp=True)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    rows.append({"group": "end to end", "name": "peak_rss", "value": peak_mb, "unit": "MiB",
                 "baseline": 4096.0, "ratio": peak_mb / 4096.0,
                 "note": "largest stage process over the runs above; ratio = fraction of the "
                         "4 GB budget"})
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)
