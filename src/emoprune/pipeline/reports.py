"""Stage reports: metrics.json, epochs.tsv, angles.tsv, their figures, and evaluate's figures.

Written under ``reports/<stage>/`` for `dvc exp show` / `dvc plots show`, and logged to the
stage's MLflow run together with the fold-mean curves (step = epoch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from emoprune.evaluation import figures
from emoprune.evaluation.statistics import mean_rows
from emoprune.pipeline.outputs import atomic_path, save_figure, write_json, write_tsv
from emoprune.pipeline.tracking import log_folder, log_metrics
from emoprune.pruning.resume import pool_histograms

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
TRACE_STATS = ("min_angle", "max_angle", "n_similar", "n_complementary", "n_alive", "removed_total")


def wide_traces(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Trace rows (fold, epoch, layer, stats...) -> one row per epoch, ``<layer>_<stat>`` columns,
    averaged over folds."""
    out: dict[int, dict[str, Any]] = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):
        for m in mean_rows([r for r in rows if r["layer"] == layer]):
            row = out.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"])})
            row.update({f"{layer}_{k}": v for k, v in m.items() if k in TRACE_STATS})
    return [out[e] for e in sorted(out)]


def write_training_reports(
    folder: str | Path,
    title: str,
    metrics: Mapping[str, Any],
    epoch_rows: Sequence[Mapping[str, Any]],
    trace_rows: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write and log metrics.json, epochs.tsv (+ loss/accuracy plots) and angles.tsv (+ plot)."""
    folder = Path(folder)
    flag_plateau(metrics)
    epochs = mean_rows(epoch_rows)
    for row in epochs:
        row["epoch"] = int(row["epoch"])
        log_metrics({k: v for k, v in row.items() if k in EPOCH_COLUMNS[1:]}, step=row["epoch"])
    write_json(folder / "metrics.json", metrics)
    write_tsv(folder / "epochs.tsv", epochs, [c for c in EPOCH_COLUMNS if c in epochs[0]])
    x = [r["epoch"] for r in epochs]
    for name, keys in (
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_acc", "val_acc")),
    ):
        fig = figures.curves(
            x,
            {k: [r.get(k) for r in epochs] for k in keys},
            xlabel="epoch",
            ylabel=name,
            title=f"{title}: {name} (mean over folds)",
        )
        save_figure(fig, folder / f"{name}.png")
    if trace_rows:
        traces = wide_traces(trace_rows)
        for row in traces:
            log_metrics(
                {k.replace("_", "/", 1): float(v) for k, v in row.items() if k != "epoch"},
                step=row["epoch"],
            )
        write_tsv(folder / "angles.tsv", traces)
        fig = figures.angle_traces(traces, title=f"{title}: pairwise angles (mean over folds)")
        save_figure(fig, folder / "angles.png")
    log_folder(folder, "reports")


def print_cv(stage: str, metrics: Mapping[str, Any], *paths: str) -> None:
    """One line: the cross-validated accuracy (mean ± std over folds) and where it went."""
    acc = metrics["val_acc"]
    print(
        f"[{stage}] val acc {acc['mean']:.3f} ± {acc['std']:.3f} over {metrics['n_folds']} "
        f"folds -> {', '.join(f'{p}/' for p in paths)}"
    )


def write_angle_histograms(folder: str | Path, pruners: Sequence[Any], threshold: float) -> None:
    """The pairwise angles at the first and the last distinctiveness check, pooled over folds."""
    first, last = pool_histograms(pruners)
    if first:
        fig = figures.angle_histograms(first, last, threshold)
        mlflow.log_figure(fig, "angle_histograms.png")
        save_figure(fig, Path(folder) / "angle_histograms.png")


def write_comparison_figures(
    folder: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    confusion: Mapping[str, Sequence[Mapping[str, Any]]],
    classes: Sequence[str],
) -> None:
    """evaluate's confusion tables (DVC's confusion plots) and PNGs, and the accuracy bars.

    One folder per kind, written atomically, because the set of models (finetune.archs) is a
    parameter: a model dropped from the params must not leave its old table behind.
    """
    folder = Path(folder)
    with atomic_path(folder / "confusion") as tables, atomic_path(folder / "plots") as figs:
        tables.mkdir()
        figs.mkdir()
        for key, rows in confusion.items():
            write_tsv(tables / f"{key}.tsv", rows, ["actual", "predicted"])
            title = f"{key}: confusion over folds {results[key]['folds']}"
            fig = figures.confusion_figure(np.array(results[key]["confusion"]), classes, title)
            figures.write_png(fig, figs / f"confusion_{key}.png")
        figures.write_png(figures.accuracy_bars(results, len(classes)), figs / "accuracy.png")


def flag_plateau(metrics: Mapping[str, Any]) -> None:
    """Say loudly, on the console and the MLflow run, which folds never left the plateau."""
    folds = list(metrics.get("plateau_folds", []))
    mlflow.log_metric("n_plateau_folds", len(folds))
    mlflow.set_tag("plateau_folds", ",".join(map(str, folds)) or "none")
    if folds:
        print(
            f"warning: fold(s) {', '.join(map(str, folds))} ended training below twice chance "
            "accuracy: the model never left its initial plateau there (flagged in "
            "metrics.json and the report, still counted in the mean)"
        )
