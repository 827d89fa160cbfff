"""Every model on the same folds: the results behind evaluate's report, from the stages' outputs.

``collect`` reads what the training stages wrote (validation probabilities and their
details.json), scores each model on the manifest's folds, and adds size and speed; ``details``
is all of it for details.json, ``headline`` the few numbers metrics.json and ``dvc exp show``
carry (each model's own headline is in its training stage's metrics.json).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoprune.errors import UserError
from emoprune.evaluation.scores import (
    confusion_rows,
    fold_scores,
    pooled_predictions,
    proba_from_npz,
)
from emoprune.evaluation.size import paired_latency
from emoprune.models.cnn import count_parameters
from emoprune.pruning.mask import PruneMask
from emoprune.pruning.shrink import shrink
from emoprune.training.checkpoints import load_cnn_checkpoint

MODELS = {  # model key -> (predictions, training-stage details)
    "mlp": ("outputs/models/mlp/val_proba.npz", "reports/train_mlp/details.json"),
    "cnn": ("outputs/models/cnn/val_proba.npz", "reports/train_cnn/details.json"),
    "pruned": ("outputs/models/pruned/val_proba.npz", "reports/prune_cnn/details.json"),
}
RESNET_DETAILS = "reports/finetune_resnet/details.json"


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); run `dvc repro`") from None


def load_probas(path: str | Path) -> dict[int, np.ndarray]:
    try:
        with np.load(path) as arrays:
            return proba_from_npz(dict(arrays))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable predictions ({exc}); run `dvc repro`") from None


def collect(
    labels: np.ndarray,
    folds: np.ndarray,
    classes: Sequence[str],
    *,
    latency_repeats: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(results {model: scores, size, speed}, confusion rows {model: rows}) of every model.

    ``labels`` and ``folds`` are (N,) in manifest order.
    """
    n_classes = len(classes)
    resnet = read_json(RESNET_DETAILS)
    sources = {
        **MODELS,
        **{arch: (f"outputs/models/resnet/{arch}/val_proba.npz", None) for arch in resnet},
    }
    results, confusion, trained_by = {}, {}, {}
    for key, (proba_path, metrics_path) in sources.items():
        probas = load_probas(proba_path)
        r = fold_scores(probas, labels, folds, n_classes, list(classes), model=key)
        trained = read_json(metrics_path) if metrics_path else resnet[key]
        trained_by[key] = trained
        r["train_acc_mean"] = trained["train_acc"]["mean"]
        r["plateau_folds"] = list(trained.get("plateau_folds", []))
        if "n_params" in trained:  # the pruned CNN's: measured on its shrunk copies below
            r["n_params"] = trained["n_params"]
        results[key] = r
        _, y_true, y_pred = pooled_predictions(probas, labels, folds, n_classes, model=key)
        confusion[key] = confusion_rows(y_true, y_pred, list(classes))

    timed = time_cnn_and_pruned(latency_repeats)
    results["cnn"].update(timed["cnn"])
    results["pruned"].update(timed["pruned"])
    pruned, widths = trained_by["pruned"], timed["widths"]
    results["pruned"]["neurons_removed"] = {
        layer: {
            "mean": pruned[f"{layer}_removed"]["mean"],
            "of": widths[layer],
            "per_fold": [m[f"{layer}_removed"] for m in pruned["per_fold"].values()],
        }
        for layer in pruned["layers"]
    }
    for arch, m in resnet.items():
        results[arch]["weights"] = m["weights"]
    return results, confusion


def time_cnn_and_pruned(latency_repeats: int) -> dict[str, Any]:
    """Size and batch-1 CPU latency of the CNN and of its pruned, physically shrunk copy.

    For every fold the two are timed back to back in this one process (``paired_latency``), so
    their latencies compare fairly; latency is the median (and quartiles) over every fold's runs.
    ``pruned.unchanged`` says that no fold removed a neuron: the two are then the same network.
    """
    times: dict[str, list[float]] = {"cnn": [], "pruned": []}
    params: dict[str, list[int]] = {"cnn": [], "pruned": []}
    widths: dict[str, int] = {}
    paths = sorted(Path("outputs/models/pruned").glob("fold*.pt"))
    if not paths:
        raise UserError("outputs/models/pruned: no pruned checkpoints; run `dvc repro`")
    for path in paths:
        cnn, _, _ = load_cnn_checkpoint(Path("outputs/models/cnn") / path.name)
        pruned, meta, _ = load_cnn_checkpoint(path)
        small = shrink(pruned, PruneMask.from_state(pruned, meta.get("pruned", {})))
        for name, t in paired_latency(
            {"cnn": cnn, "pruned": small}, cnn.in_size, latency_repeats
        ).items():
            times[name] += t
        params["cnn"].append(count_parameters(cnn))
        params["pruned"].append(count_parameters(small))
        widths = {layer: cnn.fc_pair(layer)[0].out_features for layer in meta.get("pruned", {})}
    out: dict[str, Any] = {}
    for name in times:
        q25, q50, q75 = np.percentile(times[name], [25, 50, 75])
        out[name] = {
            "n_params": float(np.mean(params[name])),
            "ms_per_image": float(q50),
            "ms_q25": float(q25),
            "ms_q75": float(q75),
        }
    out["cnn"]["n_params"] = int(params["cnn"][0])
    out["pruned"]["unchanged"] = params["pruned"] == params["cnn"]
    out["widths"] = widths
    return out


def headline(paired: Mapping[str, Any], twins: Mapping[str, Any]) -> dict[str, Any]:
    """evaluate's metrics.json: only what evaluate adds to the training stages' headlines,
    the paired CNN-vs-pruned comparison and the leakage count."""
    return {
        # diff: pruned minus CNN accuracy; p_corrected: the corrected resampled t-test, the
        # one the verdict rests on (the plain t-test and Wilcoxon are in details.json).
        "pruned_vs_cnn": {"diff": paired["mean_diff"], "p_corrected": paired["corrected_pvalue"]},
        "duplicate_twins": twins["total"],
    }


def details(
    results: Mapping[str, Mapping[str, Any]],
    paired: Mapping[str, Any],
    twins: Mapping[str, Any],
    protocol: str,
) -> dict[str, Any]:
    """evaluate's details.json: every model's scores on the same folds (per fold, per class,
    size and latency), the paired test, leakage."""
    metrics: dict[str, Any] = {
        key: {
            "acc_mean": r["acc_mean"],
            "acc_std": r["acc_std"],
            "f1_mean": r["f1_mean"],
            "f1_std": r["f1_std"],
            "train_acc_mean": r["train_acc_mean"],
            "folds": r["folds"],
            "recall": r["recall"],
            **{
                k: r[k]
                for k in ("n_params", "ms_per_image", "weights", "neurons_removed")
                if k in r
            },
        }
        for key, r in results.items()
    }
    metrics["pruned_vs_cnn"] = {
        k: paired[k]
        for k in (
            "mean_diff",
            "corrected_pvalue",
            "t_pvalue",
            "wilcoxon_pvalue",
            "wilcoxon_floor",
            "test_fraction",
            "n",
        )
    }
    metrics["duplicate_twins"] = twins["total"]
    metrics["protocol"] = protocol
    return metrics


def mlflow_metrics(
    results: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any]
) -> dict[str, float]:
    """The flat ``<model>/<metric>`` numbers evaluate's MLflow run carries (``metrics``:
    ``details``')."""
    out: dict[str, float] = {}
    for key, r in results.items():
        out.update(
            {
                f"{key}/{k}": r[k]
                for k in ("acc_mean", "acc_std", "f1_mean", "f1_std", "train_acc_mean")
            }
        )
        out.update({f"{key}/{k}": float(r[k]) for k in ("n_params", "ms_per_image") if k in r})
    diff = metrics["pruned_vs_cnn"]
    out["pruned_vs_cnn/mean_diff"] = diff["mean_diff"]
    for k in ("corrected_pvalue", "t_pvalue", "wilcoxon_pvalue"):
        if diff[k] is not None:
            out[f"pruned_vs_cnn/{k}"] = diff[k]
    out["duplicate_twins"] = metrics["duplicate_twins"]
    return out
