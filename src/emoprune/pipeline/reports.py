"""Stage reports: metrics.json, details.json, epochs.tsv, angles/, figures, evaluate's figures.

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


def layer_traces(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Trace rows (fold, epoch, layer, stats...) -> {layer: one row per epoch (epoch, stats...),
    averaged over folds}."""
    return {
        layer: [
            {"epoch": int(m["epoch"]), **{k: v for k, v in m.items() if k in TRACE_STATS}}
            for m in mean_rows([r for r in rows if r["layer"] == layer])
        ]
        for layer in dict.fromkeys(r["layer"] for r in rows)
    }


def wide_traces(layers: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """``layer_traces``' {layer: rows} -> one row per epoch with ``<layer>_<stat>`` columns."""
    out: dict[int, dict[str, Any]] = {}
    for layer, rows in layers.items():
        for m in rows:
            row = out.setdefault(m["epoch"], {"epoch": m["epoch"]})
            row.update({f"{layer}_{k}": v for k, v in m.items() if k != "epoch"})
    return [out[e] for e in sorted(out)]


def write_training_reports(
    folder: str | Path,
    title: str,
    epoch_rows: Sequence[Mapping[str, Any]],
    trace_rows: Sequence[Mapping[str, Any]] = (),
    *,
    name: str = "",
    log_prefix: str = "",
) -> None:
    """Write and log the fold-mean curves: epochs.tsv (+ loss/accuracy PNGs) and, with
    ``trace_rows``, one angles/<layer>.tsv per traced layer (+ angles.png).

    One file per layer (and, with ``name``, epochs/<name>.tsv and figures/<name>_<plot>.png) because
    the layers pruned and the ResNets trained are params: dvc.yaml declares the folders, so
    its plots follow the params instead of naming a layer or an architecture.
    """
    folder = Path(folder)
    epochs = mean_rows(epoch_rows)
    for row in epochs:
        row["epoch"] = int(row["epoch"])
        log_metrics(
            {log_prefix + k: v for k, v in row.items() if k in EPOCH_COLUMNS[1:]},
            step=row["epoch"],
        )
    tsv = folder / "epochs" / f"{name}.tsv" if name else folder / "epochs.tsv"
    write_tsv(tsv, epochs, [c for c in EPOCH_COLUMNS if c in epochs[0]])
    x = [r["epoch"] for r in epochs]
    for plot, keys in (
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_acc", "val_acc")),
    ):
        fig = figures.curves(
            x,
            {k: [r.get(k) for r in epochs] for k in keys},
            xlabel="epoch",
            ylabel=plot,
            title=f"{title}: {plot} (mean over folds)",
        )
        save_figure(
            fig, folder / "figures" / f"{name}_{plot}.png" if name else folder / f"{plot}.png"
        )
    if trace_rows:
        layers = layer_traces(trace_rows)
        traces = wide_traces(layers)
        for row in traces:
            log_metrics(
                {k.replace("_", "/", 1): float(v) for k, v in row.items() if k != "epoch"},
                step=row["epoch"],
            )
        with atomic_path(folder / "angles") as tmp:
            tmp.mkdir()
            for layer, rows in layers.items():
                write_tsv(tmp / f"{layer}.tsv", rows)
        fig = figures.angle_traces(traces, title=f"{title}: pairwise angles (mean over folds)")
        save_figure(fig, folder / "angles.png")


def headline(
    model: str, details: Mapping[str, Any], n_params: float, **extra: Any
) -> dict[str, Any]:
    """What a stage's metrics.json declares to `dvc exp show`: the model's held-out accuracy
    and macro-F1 (mean and std over folds), its parameters, the training precision (conv nets)
    and ``extra`` (neurons removed).

    Keyed by the model, so that each column name is unique across the pipeline's metrics
    files and DVC shows it without its file's path.
    """
    precision = {"precision": details["precision"]} if "precision" in details else {}
    return {
        model: {
            "acc": dict(details["val_acc"]),
            "f1": dict(details["val_f1"]),
            "n_params": n_params,
            **precision,  # a string column: which arithmetic produced these numbers
            **extra,
        }
    }


def pruned_headline(details: Mapping[str, Any], layers: Sequence[str]) -> dict[str, Any]:
    """prune_cnn's metrics.json: the pruned CNN's headline with the mean neurons removed per
    layer, and only the mean accuracy of each equal-size control (``details["baselines"]``): the
    rest of theirs is in details.json, so a threshold experiment's `dvc exp show` stays narrow.
    """
    removed = {layer: details[f"{layer}_removed"]["mean"] for layer in layers}
    out = headline("pruned", details, details["params_shrunk"]["mean"], removed=removed)
    for kind, control in details.get("baselines", {}).items():
        # The mean only: with the std, a threshold experiment's table outgrows a screen.
        out[kind] = {"acc": {"mean": control["val_acc"]["mean"]}}
    return out


def write_metrics(
    folder: str | Path, metrics: Mapping[str, Any], details: Mapping[str, Any]
) -> None:
    """metrics.json (headline numbers: `dvc exp show`) and details.json (per-fold values,
    wall-clock figures, notes: read by evaluate, not declared as metrics); then log the
    stage's whole report folder to its MLflow run."""
    if "plateau_folds" in details:
        flag_plateau(details)
    write_json(Path(folder) / "details.json", details)
    write_json(Path(folder) / "metrics.json", metrics)
    log_folder(folder, "reports")


def print_cv(stage: str, metrics: Mapping[str, Any], *paths: str) -> None:
    """One line: the cross-validated accuracy (mean ± std over folds) and where it went."""
    acc = metrics["val_acc"]
    print(
        f"[{stage}] val acc {acc['mean']:.3f} ± {acc['std']:.3f} over {metrics['n_folds']} "
        f"folds -> {', '.join(f'{p}/' for p in paths)}"
    )


def write_angle_histograms(folder: str | Path, pruners: Sequence[Any], threshold: float) -> None:
    """The pairwise angles at the start of pruning and at the last check, pooled over folds."""
    first, last = pool_histograms(pruners)
    if first:
        # Logged with the rest of the folder, under reports/ (write_metrics).
        save_figure(
            figures.angle_histograms(first, last, threshold), Path(folder) / "angle_histograms.png"
        )


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


def flag_plateau(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Say loudly, on the console and the MLflow run, which folds never left the plateau."""
    folds = list(metrics.get("plateau_folds", []))
    mlflow.log_metric(f"{prefix}n_plateau_folds", len(folds))
    mlflow.set_tag(f"{prefix}plateau_folds", ",".join(map(str, folds)) or "none")
    if folds:
        print(
            f"warning: {prefix.replace('/', ' ')}fold(s) {', '.join(map(str, folds))} ended "
            "training below twice chance accuracy: the model never left its initial plateau "
            "there (flagged in details.json and the report, still counted in the mean)"
        )
