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
from emoprune.evaluation.report import COMPARISONS
from emoprune.evaluation.scores import (
    confusion_rows,
    fold_scores,
    pooled_predictions,
    proba_from_npz,
)
from emoprune.evaluation.size import paired_latency
from emoprune.evaluation.statistics import paired_comparison
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
    splits: Mapping[int, np.ndarray],
    classes: Sequence[str],
    *,
    latency_repeats: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(results {model: scores, size, speed}, confusion rows {model: rows}) of every model.

    ``labels`` is (N,) in manifest order; ``splits`` {split id: validation indices}, as
    ``Folds.val_splits()`` gives them.
    """
    n_classes = len(classes)
    resnet = read_json(RESNET_DETAILS)
    # The equal-size controls of distinctiveness pruning, trained in prune_cnn beside it.
    controls = read_json(MODELS["pruned"][1]).get("baselines", {})
    inline = {**controls, **resnet}  # details held inside another stage's details.json
    sources = {
        **MODELS,
        **{kind: (f"outputs/models/pruned/{kind}/val_proba.npz", None) for kind in controls},
        **{arch: (f"outputs/models/resnet/{arch}/val_proba.npz", None) for arch in resnet},
    }
    results, confusion, trained_by = {}, {}, {}
    for key, (proba_path, metrics_path) in sources.items():
        probas = load_probas(proba_path)
        r = fold_scores(probas, labels, splits, n_classes, list(classes), model=key)
        trained = read_json(metrics_path) if metrics_path else inline[key]
        trained_by[key] = trained
        r["train_acc_mean"] = trained["train_acc"]["mean"]
        r["plateau_folds"] = list(trained.get("plateau_folds", []))
        if "n_params" in trained:  # the pruned CNN's: measured on its shrunk copies below
            r["n_params"] = trained["n_params"]
        results[key] = r
        _, y_true, y_pred = pooled_predictions(probas, labels, splits, n_classes, model=key)
        confusion[key] = confusion_rows(y_true, y_pred, list(classes))

    timed = time_cnn_and_pruned(latency_repeats)
    results["cnn"].update(timed["cnn"])
    results["pruned"].update(timed["pruned"])
    for key in ("pruned", *controls):
        results[key]["neurons_removed"] = neurons_removed(trained_by[key], timed["widths"])
    # The unpruned CNN in the same terms, so the report's table reads "512 of 512".
    n_folds = len(results["cnn"]["folds"])
    results["cnn"]["neurons_removed"] = {
        layer: {"mean": 0, "of": width, "per_fold": [0] * n_folds}
        for layer, width in timed["widths"].items()
    }
    for kind in controls:  # as large as the pruned CNN, fold by fold: not timed again
        results[kind]["n_params"] = trained_by[kind]["params_shrunk"]["mean"]
    for arch, m in resnet.items():
        results[arch]["weights"] = m["weights"]
    return results, confusion


def add_repeats(results: Mapping[str, dict[str, Any]], n_folds: int) -> None:
    """With repeated K-fold (split k = repeat k // K, fold k % K), give each model's results a
    ``by_repeat`` {repeat: {"acc_mean", "f1_mean", "folds"}} over the repeats it was scored in.
    Nothing is added with one repeat."""
    for r in results.values():
        repeats: dict[int, list[int]] = {}
        for k in r["acc_by_fold"]:
            repeats.setdefault(int(k) // n_folds, []).append(k)
        if max(repeats, default=0) == 0:
            continue
        r["by_repeat"] = {
            rep: {
                "acc_mean": float(np.mean([r["acc_by_fold"][k] for k in ks])),
                "f1_mean": float(np.mean([r["f1_by_fold"][k] for k in ks])),
                "folds": len(ks),
            }
            for rep, ks in sorted(repeats.items())
        }


def neurons_removed(details: Mapping[str, Any], widths: Mapping[str, int]) -> dict[str, Any]:
    """{layer: {"mean", "of" (the layer's width), "per_fold"}} of the neurons a pruned model's
    training stage removed (``details``: its details.json summary)."""
    return {
        layer: {
            "mean": details[f"{layer}_removed"]["mean"],
            "of": width,
            "per_fold": [m[f"{layer}_removed"] for m in details["per_fold"].values()],
        }
        for layer, width in widths.items()
        if f"{layer}_removed" in details
    }


# How a verdict sentence names each model ("the pruned CNN's accuracy differs from the ...").
VERDICT_NAMES = {
    "cnn": "CNN",
    "pruned": "pruned CNN",
    "random": "random-removal control",
    "magnitude": "magnitude-removal control",
}


def comparisons(
    results: Mapping[str, Mapping[str, Any]], test_fraction: float
) -> dict[str, dict[str, Any]]:
    """The paired accuracy comparisons of ``report.COMPARISONS`` whose two models both have
    results: {"vs_cnn" | "vs_random" | "vs_magnitude": ``paired_comparison``} (b minus a, over
    the folds both were scored on; ``test_fraction`` is n_test/n_train of one split)."""
    return {
        key: paired_comparison(
            results[a]["acc_by_fold"],
            results[b]["acc_by_fold"],
            VERDICT_NAMES[a],
            VERDICT_NAMES[b],
            test_fraction=test_fraction,
        )
        for key, (a, b) in COMPARISONS.items()
        if a in results and b in results
    }


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


def headline(compared: Mapping[str, Mapping[str, Any]], twins: Mapping[str, Any]) -> dict[str, Any]:
    """evaluate's metrics.json: only what evaluate adds to the training stages' headlines.

    ``p_vs.<model>``: the corrected resampled t-test's p-value of the distinctiveness-pruned
    CNN's accuracy against the unpruned CNN's and each control's (the test the verdicts rest
    on; the effects, the plain t-test and Wilcoxon are in details.json); the leakage count.
    """
    return {
        "p_vs": {key.removeprefix("vs_"): c["corrected_pvalue"] for key, c in compared.items()},
        "duplicate_twins": twins["total"],
    }


COMPARISON_KEYS = (
    "mean_diff",
    "interval_95",
    "corrected_pvalue",
    "t_pvalue",
    "wilcoxon_pvalue",
    "wilcoxon_floor",
    "test_fraction",
    "n",
    "diffs",
    "verdict",
)


def details(
    results: Mapping[str, Mapping[str, Any]],
    compared: Mapping[str, Mapping[str, Any]],
    twins: Mapping[str, Any],
    protocol: str,
) -> dict[str, Any]:
    """evaluate's details.json: every model's scores on the same folds (per fold, per class,
    size and latency), the paired comparisons (``pruned_vs_cnn``, ``pruned_vs_random``, ...),
    leakage."""
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
                for k in ("n_params", "ms_per_image", "weights", "neurons_removed", "by_repeat")
                if k in r
            },
        }
        for key, r in results.items()
    }
    for key, c in compared.items():
        metrics[f"pruned_{key}"] = {k: c[k] for k in COMPARISON_KEYS}
    metrics["duplicate_twins"] = twins["total"]
    metrics["protocol"] = protocol
    return metrics


def mlflow_metrics(
    results: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any]
) -> dict[str, float]:
    """The flat ``<model>/<metric>`` numbers evaluate's MLflow run carries (``metrics``:
    ``details``'), and ``pruned_vs_<model>/<statistic>`` for each paired comparison."""
    out: dict[str, float] = {}
    for key, r in results.items():
        out.update(
            {
                f"{key}/{k}": r[k]
                for k in ("acc_mean", "acc_std", "f1_mean", "f1_std", "train_acc_mean")
            }
        )
        out.update({f"{key}/{k}": float(r[k]) for k in ("n_params", "ms_per_image") if k in r})
        for rep, m in r.get("by_repeat", {}).items():
            out.update({f"repeat{rep}/{key}/{k}": m[k] for k in ("acc_mean", "f1_mean")})
    for name, c in metrics.items():
        if name.startswith("pruned_vs_"):
            for k in ("mean_diff", "corrected_pvalue", "t_pvalue", "wilcoxon_pvalue"):
                if c[k] is not None:
                    out[f"{name}/{k}"] = c[k]
            if c["interval_95"] is not None:
                out[f"{name}/interval_95_low"], out[f"{name}/interval_95_high"] = c["interval_95"]
    out["duplicate_twins"] = metrics["duplicate_twins"]
    return out
