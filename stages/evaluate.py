"""evaluate: every model scored on the same manifest folds, beside the paper's published figures.

Logs the whole comparison (headline metrics of every model and every stage's params) to its own
MLflow run, so experiments can be compared from the evaluate runs alone even when the upstream
stages came from DVC's cache.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import yaml

from emoprune import evaluation, plots, tracking
from emoprune.cnn_cv import load_cnn_checkpoint
from emoprune.data.ingest import read_manifest
from emoprune.errors import UserError
from emoprune.outputs import atomic_path, write_json, write_text, write_tsv
from emoprune.params import Params
from emoprune.pruning import model_size_and_latency
from emoprune.stage import run_stage

REPORTS = Path("reports/evaluate")
MODELS = {  # model key -> (predictions, training-stage metrics)
    "mlp": ("outputs/models/mlp/val_proba.npz", "reports/train_mlp/metrics.json"),
    "cnn": ("outputs/models/cnn/val_proba.npz", "reports/train_cnn/metrics.json"),
    "pruned": ("outputs/models/pruned/val_proba.npz", "reports/prune_cnn/metrics.json"),
}


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); run `dvc repro`") from None


def load_probas(path: str | Path) -> dict[int, np.ndarray]:
    try:
        with np.load(path) as arrays:
            return evaluation.proba_from_npz(dict(arrays))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable predictions ({exc}); run `dvc repro`") from None


def main(p: Params) -> None:
    records = read_manifest("outputs/ingest/manifest.csv")
    labels = np.array([r.label for r in records])
    folds = np.array([r.fold for r in records])
    classes = list(p.data.classes)
    n_classes = len(classes)
    resnet = read_json("reports/finetune_resnet/metrics.json")
    sources = dict(MODELS)
    for arch in resnet:
        sources[arch] = (f"outputs/models/resnet/{arch}/val_proba.npz", None)

    results, confusion = {}, {}
    for key, (proba_path, metrics_path) in sources.items():
        probas = load_probas(proba_path)
        r = evaluation.fold_scores(probas, labels, folds, n_classes, classes, model=key)
        trained = read_json(metrics_path) if metrics_path else resnet[key]
        r["train_acc_mean"] = trained["train_acc"]["mean"]
        results[key] = r
        _, y_true, y_pred = evaluation.pooled_predictions(probas, labels, folds, n_classes,
                                                         model=key)
        confusion[key] = evaluation.confusion_rows(y_true, y_pred, classes)

    # Size and speed: the fold-0 model of each kind, on the CPU, batch 1.
    reps = p.evaluate.latency_repeats
    cnn, _, _ = load_cnn_checkpoint("outputs/models/cnn/fold0.pt")
    results["cnn"].update(_size(model_size_and_latency(cnn, repeats=reps, threads=1)))
    pruned_metrics = read_json("reports/prune_cnn/metrics.json")
    results["pruned"].update({
        "n_params": pruned_metrics["params_shrunk"]["mean"],
        "ms_per_image": pruned_metrics["latency_ms_shrunk"]["mean"],
        "neurons_removed": {
            layer: round(cnn.fc_pair(layer)[0].out_features
                         - pruned_metrics[f"{layer}_left"]["mean"], 1)
            for layer in pruned_metrics["layers"]},
    })
    results["mlp"]["n_params"] = _mlp_params(read_json("reports/train_mlp/metrics.json"), p)
    for arch, m in resnet.items():
        results[arch].update({"n_params": m["n_params"], "weights": m["weights"]})

    cnn_acc, pruned_acc = results["cnn"]["acc_by_fold"], results["pruned"]["acc_by_fold"]
    paired = evaluation.paired_comparison(cnn_acc, pruned_acc, "CNN", "pruned CNN")
    twins = evaluation.duplicate_twins([r.sha1 for r in records], folds)
    # The ResNet rows and their section already state the weights each arch used.
    report = evaluation.comparison_markdown(
        results, protocol=p.cv.group_by, n_folds=len(set(folds.tolist())), paired=paired,
        weights_note=None, twins=twins, class_names=classes)

    metrics = {key: {"acc_mean": r["acc_mean"], "acc_std": r["acc_std"],
                     "f1_mean": r["f1_mean"], "f1_std": r["f1_std"],
                     "train_acc_mean": r["train_acc_mean"], "folds": r["folds"],
                     "recall": r["recall"],
                     **{k: r[k] for k in ("n_params", "ms_per_image", "weights",
                                          "neurons_removed") if k in r}}
               for key, r in results.items()}
    metrics["pruned_vs_cnn"] = {k: paired[k] for k in ("mean_diff", "t_pvalue", "wilcoxon_pvalue",
                                                       "n")}
    metrics["duplicate_twins"] = twins["total"]
    metrics["protocol"] = p.cv.group_by

    write_json(REPORTS / "metrics.json", metrics)
    write_text(REPORTS / "comparison.md", report)
    # One folder per kind, because the set of models (finetune.archs) is a parameter.
    with atomic_path(REPORTS / "confusion") as tables, atomic_path(REPORTS / "plots") as figs:
        tables.mkdir()
        figs.mkdir()
        for key, rows in confusion.items():
            write_tsv(tables / f"{key}.tsv", rows, ["actual", "predicted"])
            fig = evaluation.confusion_figure(
                np.array(results[key]["confusion"]), classes,
                f"{key}: confusion over folds {results[key]['folds']}")
            fig.savefig(figs / f"confusion_{key}.png", dpi=100)
            plots.close(fig)
        fig = evaluation.accuracy_bars(results, n_classes)
        fig.savefig(figs / "accuracy.png", dpi=100)
        plots.close(fig)

    _log(p, metrics, results)
    if twins["total"]:
        print(f"warning: [evaluate] {twins['total']} validation images have an identical twin "
              "in their training part (see comparison.md)")
    print(f"[evaluate] {paired['verdict']}")
    print(f"[evaluate] -> {REPORTS}/comparison.md, {REPORTS}/metrics.json")


def _size(measured: dict) -> dict:
    return {"n_params": measured["params"], "ms_per_image": measured["latency_ms"]}


def _mlp_params(metrics: dict, p: Params) -> int:
    widths = [metrics["n_inputs"], *p.mlp.hidden, len(p.data.classes)]
    return int(sum(a * b + b for a, b in zip(widths, widths[1:])))


def _log(p: Params, metrics: dict, results: dict) -> None:
    """Headline metrics of every model, every stage's params, and the report as artifacts."""
    headline = {}
    for key, r in results.items():
        headline.update({f"{key}/acc_mean": r["acc_mean"], f"{key}/acc_std": r["acc_std"],
                         f"{key}/f1_mean": r["f1_mean"], f"{key}/f1_std": r["f1_std"],
                         f"{key}/train_acc_mean": r["train_acc_mean"]})
        for k in ("n_params", "ms_per_image"):
            if k in r:
                headline[f"{key}/{k}"] = float(r[k])
    diff = metrics["pruned_vs_cnn"]
    headline["pruned_vs_cnn/mean_diff"] = diff["mean_diff"]
    if diff["t_pvalue"] is not None:
        headline["pruned_vs_cnn/t_pvalue"] = diff["t_pvalue"]
    headline["duplicate_twins"] = metrics["duplicate_twins"]
    mlflow.log_metrics(headline)
    # The union of every stage's params, so the evaluate run alone identifies the experiment.
    everything = tracking.flatten(yaml.safe_load(Path("params.yaml").read_text()) or {})
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in everything.items() if k not in logged})
    lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").exists() else {}
    data = (lock.get("stages", {}).get("ingest", {}).get("deps") or [{}])[0]
    if data.get("md5"):
        mlflow.set_tag("data.md5", data["md5"])
    tracking.log_folder(REPORTS, "evaluate")


if __name__ == "__main__":
    run_stage("evaluate", main, sections=("evaluate", "cv"))
