"""A training stage's reports: metrics.json, epochs.tsv, angles.tsv and their plots.

Written under ``reports/<stage>/`` for `dvc exp show` / `dvc plots show`, and logged to the
stage's MLflow run together with the fold-mean curves (step = epoch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


from emoprune import plots
from emoprune.crossval import mean_rows
from emoprune.outputs import write_json, write_tsv
from emoprune.tracking import log_folder, log_metrics

EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
TRACE_STATS = ("min_angle", "max_angle", "n_similar", "n_complementary", "n_alive",
               "removed_total")


def wide_traces(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Trace rows (fold, epoch, layer, stats...) -> one row per epoch, ``<layer>_<stat>`` columns,
    averaged over folds."""
    out: dict[int, dict[str, Any]] = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):
        for m in mean_rows([r for r in rows if r["layer"] == layer]):
            row = out.setdefault(int(m["epoch"]), {"epoch": int(m["epoch"])})
            row.update({f"{layer}_{k}": v for k, v in m.items() if k in TRACE_STATS})
    return [out[e] for e in sorted(out)]


def write_training_reports(folder: str | Path, title: str, metrics: Mapping[str, Any],
                           epoch_rows: Sequence[Mapping[str, Any]],
                           trace_rows: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write and log metrics.json, epochs.tsv (+ loss/accuracy plots) and angles.tsv (+ plot)."""
    folder = Path(folder)
    epochs = mean_rows(epoch_rows)
    for row in epochs:
        row["epoch"] = int(row["epoch"])
        log_metrics({k: v for k, v in row.items() if k in EPOCH_COLUMNS[1:]}, step=row["epoch"])
    write_json(folder / "metrics.json", metrics)
    write_tsv(folder / "epochs.tsv", epochs, [c for c in EPOCH_COLUMNS if c in epochs[0]])
    x = [r["epoch"] for r in epochs]
    for name, keys in (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc"))):
        fig = plots.curves(x, {k: [r.get(k) for r in epochs] for k in keys}, xlabel="epoch",
                           ylabel=name, title=f"{title}: {name} (mean over folds)")
        plots.save(fig, folder / f"{name}.png")
    if trace_rows:
        traces = wide_traces(trace_rows)
        for row in traces:
            log_metrics({k.replace("_", "/", 1): float(v) for k, v in row.items()
                         if k != "epoch"}, step=row["epoch"])
        write_tsv(folder / "angles.tsv", traces)
        fig = plots.angle_traces(traces, title=f"{title}: pairwise angles (mean over folds)")
        plots.save(fig, folder / "angles.png")
    log_folder(folder, "reports")
