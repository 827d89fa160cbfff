"""End to end: wall time and peak memory of the real `dvc repro` in a temporary copy.

- the bundled sample (what `make repro` generates: 405 frames) with the default params;
- a full-size SFEW-like sample (675 frames) with the default params (resnet18 on one fold);
- after that, `dvc exp run -S prune.threshold=15` as a fraction of the full run (only
  prune_cnn and evaluate rerun);
- today's DAG in float32 against the code at ``BASELINE_REV`` (when the speed work began) on
  the largest of those samples, one after the other: the speed-up where no bf16 is available;
- where ``precision: auto`` chose bf16, the default sample's DAG over all folds (ResNet18
  included) in bf16 and in float32, and the CNN models with another seed for scale;
- each run's training floor: the seconds its training and validation passes would take at
  100% of this machine's peak rate (FLOPs from the layer shapes), the bound on what faster
  kernels alone could reach.
Peak RSS is the largest resident set of any stage process (getrusage of the children).
On the default sample each stage then runs once more under cProfile (imports included): its top
costs by own time go into reports/bench.md.
``smoke`` runs the tiny sample with tiny params: minutes, not hours, and no targets.
"""

from __future__ import annotations

import inspect
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.bench_training import (
    PeakRates,
    forward_flops_per_image,
    training_flops_per_image,
)
from benchmarks.project import clean_env, make_project
from emoprune.data import sample
from emoprune.data.folds import load_folds
from emoprune.models.cnn import CNN

TINY = {
    "cv.folds": 2,
    "cnn.epochs": 2,
    "cnn.checkpoint_every": 1,
    "prune.start_epoch": 1,
    "mlp.epochs": 3,
    "finetune.epochs": 1,
}
DONE = re.compile(r"^\[(\w+)\] done in ([0-9.]+) s(?:, peak RSS ([0-9.]+) MiB)?", re.M)


def _sh(repo: Path, *cmd: str, **env: str) -> tuple[float, str]:
    """Wall seconds and stderr of ``cmd`` (``env`` added), which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=clean_env(**env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, proc.stderr


def _stage_rows(name: str, log: str, wall: float) -> list[dict]:
    """Each stage's own wall time (its "[stage] done in" line) as a fraction of the run, and
    its peak resident set where the line gives it."""
    rows = []
    for stage, seconds, rss in DONE.findall(log):
        rows.append(
            {
                "group": "end to end",
                "name": f"stage_{stage}_{name}",
                "value": float(seconds),
                "unit": "s",
                "baseline": wall,
                "ratio": float(seconds) / wall,
                "note": "the stage's body, after imports; ratio = fraction of the whole run",
            }
        )
        if rss:
            rows.append(
                {
                    "group": "end to end",
                    "name": f"stage_rss_{stage}_{name}",
                    "value": float(rss),
                    "unit": "MiB",
                    "baseline": 3072.0,
                    "ratio": float(rss) / 3072.0,
                    "note": "the stage process's peak resident set; ratio = of the 3 GB budget",
                }
            )
    return rows


def _pipeline(name: str, per_class: int, params: dict | None, exp: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="emoprune-bench-") as tmp:
        repo = make_project(
            Path(tmp), lambda raw: sample.generate(raw, per_class=per_class), params
        )
        wall, log = _sh(repo, "dvc", "repro")
        rows = [
            {
                "group": "end to end",
                "name": f"dvc_repro_{name}",
                "value": wall,
                "unit": "s",
                "baseline": None,
                "ratio": None,
                "note": f"{per_class} frames per class, {os.cpu_count()} cores, one run",
            }
        ]
        rows += _stage_rows(name, log, wall)
        rows.append(_floor_row(name, repo, wall, "dvc repro"))
        if exp:
            again, _ = _sh(repo, "dvc", "exp", "run", "-S", "prune.threshold=15")
            rows.append(
                {
                    "group": "end to end",
                    "name": f"exp_run_threshold_15_{name}",
                    "value": again,
                    "unit": "s",
                    "baseline": wall,
                    "ratio": again / wall,
                    "note": "only prune_cnn and evaluate rerun; ratio = fraction of the "
                    "full run (target < 0.2)",
                }
            )
        if name == "default_sample":
            rows += _precision_rows(name, repo)
            rows += _profile_rows(repo)
    return rows


def _profile_rows(repo: Path, top: int = 5) -> list[dict]:
    """Each stage of the default params run again under cProfile, in DAG order: its ``top``
    functions by own time (C calls such as torch's backward count as their own function)."""
    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=repo, check=True)
    _sh(repo, "dvc", "repro")  # the default run's outputs again, from DVC's run cache
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    prof = repo / ".profile"
    prof.mkdir()
    rows = []
    for stage, spec in stages.items():
        script = spec["cmd"].split()[-1]
        _sh(repo, "python", "-m", "benchmarks.profile_stage", str(prof / f"{stage}.prof"), script)
        rows += top_costs(prof / f"{stage}.prof", stage, top)
    return rows


def top_costs(path: Path, stage: str, top: int = 5) -> list[dict]:
    """The ``top`` functions of a cProfile file by own time, as benchmark rows."""
    stats = pstats.Stats(str(path))
    ranked = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "group": "profile",
            "name": f"profile_{stage}_{rank}",
            "value": own,
            "unit": "s",
            "baseline": stats.total_tt,
            "ratio": own / stats.total_tt,
            "note": f"{func if file == '~' else f'{Path(file).name}:{line} {func}'} ({calls} "
            "calls); baseline = the stage's whole profiled run, imports included",
        }
        for rank, ((file, line, func), (_, calls, own, _cum, _)) in enumerate(ranked, 1)
    ]


def training_floor(repo: Path, peaks: dict[str, float]) -> dict[str, float]:
    """{stage: seconds} that the run in ``repo`` spent on FLOPs, at 100% of ``peaks``
    ({"fp32" | "bf16": GFLOP/s, the machine's peak rate, ``PeakRates``).

    Counted from the run's own records: every epoch a fold trained (prune_cnn's variants from
    the epoch each resumed at; ResNets on the folds they ran) costs one training step per
    training image (``training_flops_per_image``: forward, and backward's products) in the
    stage's precision, plus one forward per validation image (in that precision, the last
    epoch's in float32); FLOPs from the layer shapes. A frozen ResNet backbone counts its one
    feature pass. The PCA + MLP is left out (a few MFLOP).
    """
    params = yaml.safe_load((repo / "params.yaml").read_text())
    folds = load_folds(params["data"]["classes"], repo / "outputs/ingest/manifest.csv")
    sizes = {k: tuple(len(part) for part in folds.split(k)) for k in folds.ids}  # (train, val)
    epochs = params["cnn"]["epochs"]

    def flops(model, size: int) -> tuple[int, int]:
        """(a training step, a forward pass) per image."""
        return training_flops_per_image(model, size), forward_flops_per_image(model, size)

    def seconds(step_forward: tuple[int, int], trained: dict[int, int], precision: str) -> float:
        """``trained``: {split: epochs trained}. Each epoch validates in ``precision``, the last
        one in float32 (``loop.fit``)."""
        step, forward = step_forward
        total = 0.0
        for k, e in trained.items():
            train, val = sizes[k]
            total += e * train * step / peaks[precision]
            if e:
                total += val * forward * ((e - 1) / peaks[precision] + 1 / peaks["fp32"])
        return total / 1e9

    def read(path: str) -> dict:
        return json.loads((repo / "reports" / path).read_text())

    cnn = flops(CNN(n_classes=len(folds.classes)), params["resize"]["cnn"])
    trained = read("train_cnn/details.json")
    precision = read("train_cnn/metrics.json")["cnn"]["precision"]
    floor = {"train_cnn": seconds(cnn, {int(k): epochs for k in trained["per_fold"]}, precision)}
    pruned = read("prune_cnn/details.json")
    variants = [pruned, *pruned.get("baselines", {}).values()]  # the pruned CNN, each control
    floor["prune_cnn"] = sum(
        seconds(
            cnn,
            {int(k): epochs - fold["resumed_at_epoch"] for k, fold in v["per_fold"].items()},
            precision,
        )
        for v in variants
    )
    import torchvision  # only here: ~1 s to import

    floor["finetune_resnet"] = 0.0
    for arch, run in read("finetune_resnet/details.json").items():
        model = getattr(torchvision.models, arch)(num_classes=len(folds.classes))
        size = params["resize"]["resnet"]
        if params["finetune"]["freeze_backbone"]:  # features once per fold; the head is tiny
            forward = forward_flops_per_image(model, size)
            floor["finetune_resnet"] += (
                sum(sum(sizes[k]) for k in run["folds"]) * forward / (peaks[run["precision"]] * 1e9)
            )
        else:
            floor["finetune_resnet"] += seconds(
                flops(model, size), {k: run["epochs"] for k in run["folds"]}, run["precision"]
            )
    return floor


def _floor_row(name: str, repo: Path, wall: float, what: str) -> dict:
    """The run's ``training_floor`` beside its wall time ``wall``: ratio = the fraction of the
    run that the FLOPs alone need at the machine's peak rate."""
    peaks = PeakRates()  # bf16 measured only where a stage ran in it
    floor = training_floor(repo, peaks)
    rates = "; ".join(f"{p}: {peaks.note(p)}" for p in peaks)
    total = sum(floor.values())
    parts = ", ".join(f"{stage} {s:.0f} s" for stage, s in floor.items())
    return {
        "group": "end to end",
        "name": f"training_floor_{name}",
        "value": total,
        "unit": "s",
        "baseline": wall,
        "ratio": total / wall,
        "note": f"{what}: its training and validation FLOPs at 100% of the machine's measured "
        f"peak ({rates}): {parts}; ratio = of the run's wall time; no kernel that runs at most "
        "as fast as the fastest measured makes the run shorter than this",
    }


# Where each model's per-fold held-out accuracies sit: (details file, keys down to ``per_fold``).
FOLD_ACCURACIES = {
    "cnn": ("reports/train_cnn/details.json", ()),
    "pruned": ("reports/prune_cnn/details.json", ()),
    "random": ("reports/prune_cnn/details.json", ("baselines", "random")),
    "magnitude": ("reports/prune_cnn/details.json", ("baselines", "magnitude")),
    "resnet18": ("reports/finetune_resnet/details.json", ("resnet18",)),
}


def fold_accuracies(repo: Path, models: tuple[str, ...] = tuple(FOLD_ACCURACIES)) -> dict:
    """{model: {fold: held-out accuracy}} from the workspace's stage reports (models the
    workspace's params do not train are left out)."""
    out = {}
    for model in models:
        path, keys = FOLD_ACCURACIES[model]
        data = json.loads((repo / path).read_text())
        for key in keys:
            data = data.get(key, {})
        if "per_fold" in data:
            out[model] = {int(k): fold["val_acc"] for k, fold in data["per_fold"].items()}
    return out


def seed_means(runs: list[dict[int, float]]) -> dict[int, float]:
    """Per-fold accuracy averaged over runs with different seeds (the folds all runs share)."""
    folds = sorted(set.intersection(*(set(run) for run in runs)))
    return {k: sum(run[k] for run in runs) / len(runs) for k in folds}


def _mean(per_fold: dict[int, float]) -> float:
    return sum(per_fold.values()) / len(per_fold)


def _interval(compared: dict) -> str:
    """A paired comparison's 95% interval and corrected p, in points, for a row's note."""
    if compared["interval_95"] is None:
        return "the difference does not vary over the folds: no interval or p"
    low, high = (100 * x for x in compared["interval_95"])
    return (
        f"95% interval {low:+.1f} to {high:+.1f} (corrected resampled t over the folds' seed "
        f"means; p = {compared['corrected_pvalue']:.2f})"
    )


# `make bench` only (no smoke): the issue compares precisions "over 5 folds", and ResNet18 trains
# on one fold by default, where one of its 81 frames is 1.2 points: both precisions run it on all.
PRECISION_PARAMS = ("-S", "finetune.folds=all", "-S", "prune.threshold=25")
# The CNN models (train_cnn, prune_cnn) train under each seed in both precisions: one run per
# precision moves a model's mean by 2-4 points with the seed, more than the 1-point target.
# ResNet18 (25 epochs on every fold, ~4 DAGs' worth of time per seed) runs under the first only.
PRECISION_SEEDS = (42, 43, 44)
CNN_MODELS = tuple(m for m, (path, _) in FOLD_ACCURACIES.items() if "finetune_resnet" not in path)


def _precision_rows(name: str, repo: Path) -> list[dict]:
    """bf16 (``precision: auto``, where it chose bf16) against float32, each conv net's mean
    held-out accuracy in points, averaged over ``PRECISION_SEEDS`` (the CNN models) and the
    folds, with the corrected resampled 95% interval over the folds; and for scale how far one
    other seed moves the CNN models' means. Nothing where auto chose float32."""
    from emoprune.evaluation.statistics import paired_comparison

    cnn = json.loads((repo / "reports/train_cnn/metrics.json").read_text())["cnn"]
    if cnn["precision"] != "bf16":
        return []

    first, other = PRECISION_SEEDS[:2]

    def accuracies(seed: int, precision: str) -> dict[str, dict[int, float]]:
        settings = ("-S", f"seed={seed}", "-S", f"precision={precision}")
        target = () if seed == first else ("prune_cnn",)  # the CNN models only
        _sh(repo, "dvc", "exp", "run", *PRECISION_PARAMS, *settings, *target)
        return fold_accuracies(repo, tuple(FOLD_ACCURACIES) if seed == first else CNN_MODELS)

    runs = {(s, p): accuracies(s, p) for s in PRECISION_SEEDS for p in ("auto", "fp32")}
    rows = []
    for model in runs[first, "auto"]:
        seeds = [
            s for s in PRECISION_SEEDS if model in runs[s, "auto"] and model in runs[s, "fp32"]
        ]
        bf16 = seed_means([runs[s, "auto"][model] for s in seeds])
        fp32 = seed_means([runs[s, "fp32"][model] for s in seeds])
        cmp = paired_comparison(fp32, bf16, "fp32", "bf16")
        per_seed = ", ".join(
            f"seed {s}: {100 * _mean(runs[s, 'auto'][model]):.1f}% vs "
            f"{100 * _mean(runs[s, 'fp32'][model]):.1f}%"
            for s in seeds
        )
        rows.append(
            {
                "group": "precision",
                "name": f"bf16_vs_fp32_{model}_acc_points_{name}",
                "value": 100 * abs(cmp["mean_diff"]),
                "unit": "points",
                "baseline": 100 * _mean(fp32),
                "ratio": None,
                "note": f"|bf16 - fp32| of the mean held-out accuracy over {len(bf16)} folds and "
                f"{len(seeds)} seed(s): bf16 - fp32 = {100 * cmp['mean_diff']:+.2f} points, "
                f"{_interval(cmp)}; {per_seed}",
            }
        )
    for model in CNN_MODELS:
        if model in runs[other, "auto"]:
            ours, theirs = _mean(runs[other, "auto"][model]), _mean(runs[first, "auto"][model])
            rows.append(
                {
                    "group": "precision",
                    "name": f"seed_{other}_vs_{first}_{model}_acc_points_{name}",
                    "value": 100 * abs(ours - theirs),
                    "unit": "points",
                    "baseline": 100 * theirs,
                    "ratio": None,
                    "note": f"|seed {other} - seed {first}| of the mean held-out accuracy over all "
                    "folds, both in the auto precision: how far an arbitrary choice moves it, for "
                    "scale (no target)",
                }
            )
    return rows


# The code as it was when the speed issue was filed: the float32 baseline.
BASELINE_REV = "ba2834d"


def _speedup_rows(name: str, per_class: int, params: dict | None) -> list[dict]:
    """Today's float32 DAG against the code at ``BASELINE_REV`` on the same sample and params, one
    after the other in this run: the path a CPU without bf16 takes (target >= 1.8x faster)."""
    with tempfile.TemporaryDirectory(prefix="emoprune-bench-") as tmp:
        walls = {}
        for which, rev, extra in (("old", BASELINE_REV, {}), ("new", None, {"precision": "fp32"})):
            repo = make_project(
                Path(tmp) / which,
                lambda raw: sample.generate(raw, per_class=per_class),
                {**(params or {}), **extra},
                rev=rev,
            )
            # The old stages import the old package: its src/ ahead of the venv's editable one.
            env = {"PYTHONPATH": str(repo / "src")} if rev else {}
            walls[which], _ = _sh(repo, "dvc", "repro", **env)
        floor = _floor_row(f"fp32_{name}", repo, walls["new"], "today's float32 DAG")
    best = walls["old"] / floor["value"]
    return [
        {
            "group": "end to end",
            "name": f"fp32_speedup_vs_{BASELINE_REV}_{name}",
            "value": walls["new"],
            "unit": "s",
            "baseline": walls["old"],
            "ratio": walls["old"] / walls["new"],
            "note": f"dvc repro with precision: fp32 (what a CPU without bf16 runs) vs the code "
            f"at {BASELINE_REV} ({walls['old']:.0f} s), same sample and params; ratio = times "
            "faster",
        },
        floor,
        {
            "group": "end to end",
            "name": f"fp32_speedup_bound_vs_{BASELINE_REV}_{name}",
            "value": best,
            "unit": "x",
            "baseline": None,
            "ratio": None,
            "note": f"the code at {BASELINE_REV} ({walls['old']:.0f} s) against today's float32 "
            f"training floor ({floor['value']:.0f} s): the most times faster today's float32 DAG "
            "could be with every kernel at the measured peak rate, the same training steps taken",
        },
    ]


# The bundled sample is what `make repro` generates (sample.generate's default, 405 frames);
# 100 per class is SFEW's 675 (Disgust has 3/4 of the others).
BUNDLED = inspect.signature(sample.generate).parameters["per_class"].default
SIZES = {"default": ("default_sample", BUNDLED), "full": ("full_size_675", 100)}


def run(smoke: bool = False, e2e: tuple[str, ...] = ("default", "full")) -> list[dict]:
    """``e2e`` picks the samples: the bundled one (405 frames), the full-size one (675)."""
    if smoke:
        rows = _pipeline("tiny", 4, TINY, exp=True)
    else:
        rows = []
        for size in e2e:
            name, per_class = SIZES[size]
            rows += _pipeline(name, per_class, None, exp=True)
    # Before the old code runs: its stages' memory is not this code's.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    rows.append(
        {
            "group": "end to end",
            "name": "peak_rss",
            "value": peak_mb,
            "unit": "MiB",
            "baseline": 3072.0,
            "ratio": peak_mb / 3072.0,
            "note": "largest stage process over the runs above; ratio = fraction of the "
            "3 GB budget",
        }
    )
    if not smoke:  # against the old code on the largest sample chosen: two more whole DAGs
        name, per_class = SIZES["full" if "full" in e2e else "default"]
        rows += _speedup_rows(name, per_class, None)
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv[1:]):
        print(row)
