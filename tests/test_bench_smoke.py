"""The benchmarks must keep running (CI runs their smoke version; no thresholds here)."""

import importlib
import re

import pytest

from benchmarks.__main__ import MODULES


@pytest.mark.parametrize("name", MODULES)
def test_smoke_rows_are_complete(name):
    rows = importlib.import_module(f"benchmarks.{name}").run(smoke=True)
    assert rows
    for row in rows:
        assert {"group", "name", "value", "unit", "baseline", "ratio", "note"} <= set(row)
        assert row["value"] == row["value"] and row["value"] >= 0  # a number, not NaN
        if row["ratio"] is not None:
            assert row["baseline"] is not None and row["ratio"] > 0


def test_targets_are_checked_and_summarised():
    from benchmarks.__main__ import check_targets, summary

    rows = [
        {"name": "lpq_227x227_fast", "value": 10.0, "unit": "img/s", "ratio": 5.0},
        {"name": "fit_images_per_s", "value": 90.0, "unit": "img/s", "ratio": 0.85},
        {"name": "dvc_repro_default_sample", "value": 400.0, "unit": "s", "ratio": None},
        {"name": "peak_rss", "value": 900.0, "unit": "MiB", "ratio": 0.2},
    ]
    check_targets(rows)
    assert [r.get("met") for r in rows] == [True, False, False, True]
    assert rows[2]["target"] == "value < 120"
    lines = summary(rows).splitlines()
    assert len(lines) == 2 + len(rows) and lines[3].rstrip().endswith("NOT met")


def test_make_bench_writes_both_reports(tmp_path):
    import json

    from benchmarks.__main__ import main

    assert main(["--smoke", "--only", "bench_pruning", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["smoke"] is True and report["rows"]
    md = (tmp_path / "bench.md").read_text()
    assert "## Summary" in md and "## Every row" in md


def test_stage_times_are_read_from_the_repro_log():
    from benchmarks.bench_pipeline import _stage_rows

    log = "[ingest] done in 3.5 s\nnoise\n[train_cnn] done in 120.0 s, peak RSS 1536 MiB\n"
    rows = _stage_rows("x", log, wall=200.0)
    assert [(r["name"], r["value"], r["ratio"]) for r in rows] == [
        ("stage_ingest_x", 3.5, 0.0175),
        ("stage_train_cnn_x", 120.0, 0.6),
        ("stage_rss_train_cnn_x", 1536.0, 0.5),
    ]


def test_a_profile_becomes_its_top_costs(tmp_path):
    import cProfile

    from benchmarks.bench_pipeline import top_costs

    def slow():
        return sum(i * i for i in range(200_000))

    cProfile.runctx("slow()", {"slow": slow}, {}, str(tmp_path / "x.prof"))
    rows = top_costs(tmp_path / "x.prof", "train_cnn", top=3)
    assert [r["name"] for r in rows] == [f"profile_train_cnn_{i}" for i in (1, 2, 3)]
    assert rows[0]["value"] >= rows[1]["value"] >= rows[2]["value"] > 0
    assert any("genexpr" in r["note"] for r in rows) and 0 < rows[0]["ratio"] <= 1


@pytest.mark.parametrize("ending", ["exit_now(0)", "pass"])
def test_a_stage_is_profiled_however_it_ends(tmp_path, ending):
    import subprocess
    import sys

    from benchmarks.bench_pipeline import top_costs
    from benchmarks.project import REPO

    # Stages end with exit_now (os._exit), where `python -m cProfile -o` writes nothing.
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys\n"
        "from emoprune.pipeline.process import exit_now\n"
        "def busy():\n"
        "    return sum(i * i for i in range(300_000))\n"
        "busy()\n"
        "assert sys.argv[1:] == ['--x']\n"
        f"{ending}\n"
    )
    out = tmp_path / "stage.prof"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_stage", str(out), str(script), "--x"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    rows = top_costs(out, "stage", top=3)
    assert any("busy" in r["note"] or "genexpr" in r["note"] for r in rows), rows


def test_the_suite_benchmark_times_a_passing_pytest_run():
    from benchmarks.__main__ import check_targets
    from benchmarks.bench_suite import run

    (row,) = run(smoke=True)
    assert row["name"] == "make_test_smoke" and row["value"] > 0
    assert re.search(r"tests/test_process\.py: [1-9]\d* passed", row["note"]), row["note"]
    check_targets([row])
    assert "target" not in row  # only the full suite's row carries the 10-minute target
    full = {"name": "make_test", "value": 700.0, "ratio": None}
    check_targets([full])
    assert full["target"] == "value < 600" and full["met"] is False


def test_the_suite_benchmark_times_the_makefile_recipe():
    import subprocess

    from benchmarks.bench_suite import MAKE_TEST
    from benchmarks.project import REPO

    # `make -n` prints the recipe without running it: the row times the xdist run users get.
    dry = subprocess.run([*MAKE_TEST, "-n"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"-m pytest -n 2 --dist loadgroup", dry.stdout), dry.stdout


def test_the_baseline_revision_is_extracted_without_lock_data_or_reports(tmp_path):
    import subprocess

    from benchmarks.bench_pipeline import BASELINE_REV
    from benchmarks.project import REPO, extract_revision

    extract_revision(BASELINE_REV, tmp_path)
    old = subprocess.run(
        ["git", "show", f"{BASELINE_REV}:stages/train_cnn.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (tmp_path / "stages/train_cnn.py").read_text() == old
    assert (tmp_path / "src/emoprune/__init__.py").is_file() and (tmp_path / "dvc.yaml").is_file()
    assert not any((tmp_path / p).exists() for p in ("dvc.lock", "data.dvc", "reports"))
    # The baseline predates the precision param: that is what it is timed against.
    assert "precision" not in (tmp_path / "params.yaml").read_text()


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_rows_and_their_peak_only_where_bf16_is_benchmarked(bf16):
    from benchmarks.bench_training import PeakRates, cnn_rows

    peaks = PeakRates(reps=1, n=256, batch=1)
    rows = cnn_rows(smoke=True, peaks=peaks, bf16=bf16)
    by_name = {r["name"]: r for r in rows}
    bf16_rows = {"matmul_bf16_gflops", "peak_bf16_gflops", "cnn_train_bf16_gflops"}
    assert (bf16_rows <= set(by_name)) == bf16
    # Each precision's fraction is of its peak, the fastest probe, torch.mm's product among them.
    for precision, row in (("fp32", "cnn_train_gflops"), ("bf16", "cnn_train_bf16_gflops")):
        if precision == "bf16" and not bf16:
            continue
        assert (
            by_name[row]["baseline"]
            == peaks[precision]
            == by_name[f"peak_{precision}_gflops"]["value"]
        )
        assert peaks[precision] >= by_name[f"matmul_{precision}_gflops"]["value"] > 0
        assert "torch.mm" in by_name[f"peak_{precision}_gflops"]["note"]
    # The bf16 matmul (minutes where emulated) is timed only when a bf16 row reads it.
    assert set(peaks) == ({"fp32", "bf16"} if bf16 else {"fp32"})
    assert bf16 or "no bf16 rows" in rows[0]["note"]


def test_forward_flops_count_two_per_multiply_add_from_the_layer_shapes():
    from torch import nn

    from benchmarks.bench_training import forward_flops_per_image

    # conv 3->4, 3x3, on 8x8: a 6x6 output; then 4*6*6 -> 5.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    assert forward_flops_per_image(model, 8) == 2 * 3 * 9 * 4 * 36 + 2 * 144 * 5


def test_training_flops_leave_out_the_gradients_nothing_needs():
    import torch
    from torch import nn

    from benchmarks.bench_training import forward_flops_per_image, training_flops_per_image
    from emoprune.models.cnn import CNN

    conv, linear = 2 * 3 * 9 * 4 * 36, 2 * 144 * 5
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    # The first layer's input is the images: its weight gradient, no input gradient.
    assert training_flops_per_image(model, 8) == 2 * conv + 3 * linear
    # A frozen first layer: forward only, and the next one needs no input gradient either.
    model[0].requires_grad_(False)
    assert training_flops_per_image(model, 8) == conv + 2 * linear
    # The paper's CNN: 3x forward, less conv1's input gradient (40% of the forward FLOPs).
    cnn = CNN()
    conv1 = 2 * 3 * 11 * 11 * 16 * 55 * 55
    assert training_flops_per_image(cnn, 227) == 3 * forward_flops_per_image(cnn, 227) - conv1
    assert cnn.training and torch.is_grad_enabled()  # the count leaves the model's mode alone


def test_the_peak_is_the_fastest_probe(monkeypatch):
    from benchmarks import bench_training

    monkeypatch.setattr(bench_training, "matmul_gflops", lambda n, reps, device, dtype: 200.0)
    rates = {64: 500.0, 128: 540.0, 256: 560.0, 512: 300.0}
    monkeypatch.setattr(
        bench_training, "conv_gflops", lambda c, side, batch, reps, device, dtype: rates[c]
    )
    peaks = bench_training.PeakRates()
    assert peaks["fp32"] == 560.0
    assert peaks.probes["fp32"]["torch.mm"] == 200.0
    assert peaks.note("fp32") == (
        "fastest of (torch.mm 200, conv3x3 64@56 500, conv3x3 128@28 540, conv3x3 256@14 560, "
        "conv3x3 512@7 300) GFLOP/s"
    )


def _floor_repo(tmp_path, freeze: bool):
    """A finished run's records, crafted: 2 folds of 6 and 4 frames, CNN 10 epochs, the pruned
    CNN resumed at epochs 4 / 10 and its one control at 6 / 10, ResNet18 on fold 1 for 3."""
    import csv
    import json

    import yaml

    classes = ["Angry", "Happy"]
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"classes": classes},
                "cnn": {"epochs": 10},
                "resize": {"cnn": 227, "resnet": 224},
                "finetune": {"freeze_backbone": freeze},
            }
        )
    )
    manifest = tmp_path / "outputs/ingest/manifest.csv"
    manifest.parent.mkdir(parents=True)
    fields = "path emotion label width height fold clip sha1 checks".split()
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for i, fold in enumerate([0] * 4 + [1] * 6):  # fold 0 validates 4, trains 6
            label = i % 2
            row = [f"x{i}.png", classes[label], label, 9, 9, fold, f"c{i}", "0" * 40, "ok"]
            writer.writerow(dict(zip(fields, row)))
    reports = {
        "train_cnn/details.json": {"per_fold": {"0": {}, "1": {}}},
        "train_cnn/metrics.json": {"cnn": {"precision": "bf16"}},
        "prune_cnn/details.json": {
            "per_fold": {"0": {"resumed_at_epoch": 4}, "1": {"resumed_at_epoch": 10}},
            "baselines": {
                "random": {
                    "per_fold": {"0": {"resumed_at_epoch": 6}, "1": {"resumed_at_epoch": 10}}
                }
            },
        },
        "finetune_resnet/details.json": {
            "resnet18": {"folds": [1], "epochs": 3, "precision": "fp32"}
        },
    }
    for path, data in reports.items():
        (tmp_path / "reports" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "reports" / path).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("freeze", [False, True])
def test_the_training_floor_counts_the_steps_the_run_took(tmp_path, freeze):
    import torchvision

    from benchmarks.bench_pipeline import training_floor
    from benchmarks.bench_training import forward_flops_per_image, training_flops_per_image
    from emoprune.models.cnn import CNN

    repo = _floor_repo(tmp_path, freeze)
    peaks = {"fp32": 2.0, "bf16": 5.0}  # GFLOP/s
    floor = training_floor(repo, peaks)
    models = {
        "cnn": (CNN(n_classes=2), 227),
        "resnet": (torchvision.models.resnet18(num_classes=2), 224),
    }
    forward = {k: forward_flops_per_image(*m) / 1e9 for k, m in models.items()}
    step = {k: training_flops_per_image(*m) / 1e9 for k, m in models.items()}

    def cost(train, val, epochs, model, peak):  # a step per training image, a forward per val one
        # Validation in the training precision, the last epoch's in float32.
        validation = forward[model] * val * ((epochs - 1) / peak + 1 / peaks["fp32"])
        return epochs * step[model] * train / peak + validation

    # Fold 0 trains on 6 frames and validates on 4, fold 1 the other way round.
    assert floor["train_cnn"] == pytest.approx(
        cost(6, 4, 10, "cnn", 5.0) + cost(4, 6, 10, "cnn", 5.0)
    )
    # Only fold 0 trains on: the pruned CNN from epoch 4, the control from 6; fold 1 resumed at
    # the last epoch and trains nothing.
    assert floor["prune_cnn"] == pytest.approx(
        cost(6, 4, 6, "cnn", 5.0) + cost(6, 4, 4, "cnn", 5.0)
    )
    expected = 10 * forward["resnet"] / 2.0 if freeze else cost(4, 6, 3, "resnet", 2.0)
    assert floor["finetune_resnet"] == pytest.approx(expected)
    # Twice the rate, half the floor.
    half = training_floor(repo, {k: 2 * v for k, v in peaks.items()})
    assert sum(half.values()) == pytest.approx(sum(floor.values()) / 2)


@pytest.mark.parametrize("auto", ["bf16", "fp32"])
def test_precisions_are_compared_over_every_fold_and_seed(tmp_path, monkeypatch, auto):
    import json

    from benchmarks import bench_pipeline
    from emoprune.evaluation.statistics import corrected_interval

    (tmp_path / "reports/train_cnn").mkdir(parents=True)
    (tmp_path / "reports/train_cnn/metrics.json").write_text(
        json.dumps({"cnn": {"precision": auto}})
    )
    runs = []
    models = ("cnn", "pruned", "random", "magnitude", "resnet18")
    fp32_gap = [0.01, 0.03, 0.05, 0.02, 0.04]  # per fold: fp32 - bf16, the same under each seed

    def sh(repo, *cmd):
        assert repo == tmp_path
        runs.append(cmd)
        return 1.0, ""

    def fold_accuracies(repo, wanted):  # each run's accuracies tell which settings it ran with
        cmd = " ".join(runs[-1])
        seed = int(re.search(r"seed=(\d+)", cmd).group(1))
        fp32 = "precision=fp32" in cmd
        return {
            m: {
                # ResNet18 scores the same in both precisions: no spread, no interval.
                k: 0.5 + i / 100 + (seed - 42) / 100 + (fp32_gap[k] if fp32 and i < 4 else 0.0)
                for k in range(5)
            }
            for i, m in enumerate(models)
            if m in wanted
        }

    monkeypatch.setattr(bench_pipeline, "_sh", sh)
    monkeypatch.setattr(bench_pipeline, "fold_accuracies", fold_accuracies)
    rows = {r["name"]: r for r in bench_pipeline._precision_rows("s", tmp_path)}
    if auto == "fp32":  # nothing to compare, nothing trained
        assert rows == {} and runs == []
        return
    # Every seed in both precisions; ResNet18 (all folds) only in the first seed's whole DAGs,
    # the other seeds retrain the CNN models only.
    assert all(r[:3] == ("dvc", "exp", "run") and "finetune.folds=all" in r for r in runs)
    assert [(re.search(r"seed=(\d+)", " ".join(r)).group(1), r[-1]) for r in runs] == [
        ("42", "precision=auto"),
        ("42", "precision=fp32"),
        ("43", "prune_cnn"),
        ("43", "prune_cnn"),
        ("44", "prune_cnn"),
        ("44", "prune_cnn"),
    ]
    assert ["precision=fp32" in " ".join(r) for r in runs] == [False, True] * 3
    low, high = corrected_interval([-g for g in fp32_gap], 0.25)
    for m in models[:4]:
        row = rows[f"bf16_vs_fp32_{m}_acc_points_s"]
        assert row["value"] == pytest.approx(3.0)  # the mean gap, over folds and seeds
        assert "-3.00 points" in row["note"] and "3 seed(s)" in row["note"]
        assert f"95% interval {100 * low:+.1f} to {100 * high:+.1f}" in row["note"]
    resnet = rows["bf16_vs_fp32_resnet18_acc_points_s"]
    assert resnet["value"] == 0 and "1 seed(s)" in resnet["note"]
    assert "does not vary over the folds: no interval" in resnet["note"]
    assert {n for n in rows if n.startswith("seed_")} == {
        f"seed_43_vs_42_{m}_acc_points_s" for m in models[:4]
    }
    assert rows["seed_43_vs_42_cnn_acc_points_s"]["value"] == pytest.approx(1.0)


def test_fold_accuracies_are_read_from_the_stage_reports(tmp_path):
    import json

    from benchmarks.bench_pipeline import fold_accuracies, seed_means

    def write(path, data):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(data))

    def folds(*accs):
        return {"per_fold": {str(k): {"val_acc": a, "train_acc": 1.0} for k, a in enumerate(accs)}}

    write("reports/train_cnn/details.json", folds(0.5, 0.6))
    write(
        "reports/prune_cnn/details.json",
        {**folds(0.55, 0.65), "baselines": {"random": folds(0.4, 0.45)}},  # no magnitude control
    )
    write("reports/finetune_resnet/details.json", {"resnet18": folds(0.3)})
    assert fold_accuracies(tmp_path) == {
        "cnn": {0: 0.5, 1: 0.6},
        "pruned": {0: 0.55, 1: 0.65},
        "random": {0: 0.4, 1: 0.45},
        "resnet18": {0: 0.3},
    }
    assert fold_accuracies(tmp_path, ("cnn",)) == {"cnn": {0: 0.5, 1: 0.6}}
    assert seed_means([{0: 0.5, 1: 0.6}, {0: 0.7, 1: 0.8, 2: 0.9}]) == {
        0: pytest.approx(0.6),
        1: pytest.approx(0.7),
    }
