"""Every model on the same folds: the results behind evaluate's report, from the stages' outputs.

``collect`` reads what the training stages wrote (validation probabilities and their
metrics.json), scores each model on the manifest's folds, and adds size and speed; ``headline``
picks what metrics.json and ``dvc exp show`` carry.
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
from emoprune.evaluation.size import model_size_and_latency
from emoprune.training.checkpoints import load_cnn_checkpoint

MODELS = {  # model key -> (predictions, training-stage metrics)
    "mlp": ("outputs/models/mlp/val_proba.npz", "reports/train_mlp/metrics.json"),
    "cnn": ("outputs/models/cnn/val_proba.npz", "reports/train_cnn/metrics.json"),
    "pruned": ("outputs/models/pruned/val_proba.npz", "reports/prune_cnn/metrics.json"),
}
RESNET_METRICS = "reports/finetune_resnet/metrics.json"


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
    mlp_hidden: Sequence[int],
    latency_repeats: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(results {model: scores, size, speed}, confusion rows {model: rows}) of every model.

    ``labels`` and ``folds`` are (N,) in manifest order.
    """
    n_classes = len(classes)
    resnet = read_json(RESNET_METRICS)
    sources = {
        **MODELS,
        **{arch: (f"outputs/models/resnet/{arch}/val_proba.npz", None) for arch in resnet},
    }
    results, confusion = {}, {}
    for key, (proba_path, metrics_path) in sources.items():
        probas = load_probas(proba_path)
        r = fold_scores(probas, labels, folds, n_classes, list(classes), model=key)
        trained = read_json(metrics_path) if metrics_path else resnet[key]
        r["train_acc_mean"] = trained["train_acc"]["mean"]
        results[key] = r
        _, y_true, y_pred = pooled_predictions(probas, labels, folds, n_classes, model=key)
        confusion[key] = confusion_rows(y_true, y_pred, list(classes))

    # Size and speed: the fold-0 model of each kind, on the CPU, batch 1.
    cnn, _, _ = load_cnn_checkpoint("outputs/models/cnn/fold0.pt")
    measured = model_size_and_latency(cnn, repeats=latency_repeats, threads=1)
    results["cnn"].update({"n_params": measured["params"], "ms_per_image": measured["latency_ms"]})
    pruned = read_json(MODELS["pruned"][1])
    results["pruned"].update(
        {
            "n_params": pruned["params_shrunk"]["mean"],
            "ms_per_image": pruned["latency_ms_shrunk"]["mean"],
            "neurons_removed": {
                layer: round(
                    cnn.fc_pair(layer)[0].out_features - pruned[f"{layer}_left"]["mean"], 1
                )
                for layer in pruned["layers"]
            },
        }
    )
    widths = [read_json(MODELS["mlp"][1])["n_inputs"], *mlp_hidden, n_classes]
    results["mlp"]["n_params"] = int(sum(a * b + b for a, b in zip(widths, widths[1:])))
    for arch, m in resnet.items():
        results[arch].update({"n_params": m["n_params"], "weights": m["weights"]})
    return results, confusion


def headline(
    results: Mapping[str, Mapping[str, Any]],
    paired: Mapping[str, Any],
    twins: Mapping[str, Any],
    protocol: str,
) -> dict[str, Any]:
    """evaluate's metrics.json: each model's headline numbers, the paired test, leakage."""
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
        k: paired[k] for k in ("mean_diff", "t_pvalue", "wilcoxon_pvalue", "n")
    }
    metrics["duplicate_twins"] = twins["total"]
    metrics["protocol"] = protocol
    return metrics


def mlflow_metrics(
    results: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any]
) -> dict[str, float]:
    """The flat ``<model>/<metric>`` numbers evaluate's MLflow run carries."""
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
    if diff["t_pvalue"] is not None:
        out["pruned_vs_cnn/t_pvalue"] = diff["t_pvalue"]
    out["duplicate_twins"] = metrics["duplicate_twins"]
    return out
