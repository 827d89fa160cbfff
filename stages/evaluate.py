"""evaluate: every model scored on the same manifest folds, beside the paper's published figures.

Logs the whole comparison (every model's headline metrics, every stage's params, the folds it
scored as datasets) to its own MLflow run, and registers the CNN and the pruned CNN."""

from pathlib import Path

import numpy as np

from emoprune.data.folds import folds_from_records
from emoprune.data.ingest import read_manifest
from emoprune.evaluation.leakage import duplicate_twins
from emoprune.evaluation.report import comparison_markdown
from emoprune.pipeline import compare, datasets, registry, reports, tracking
from emoprune.pipeline.outputs import write_json, write_text
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage

REPORTS = Path("reports/evaluate")


def main(p: Params) -> None:
    records = read_manifest("outputs/ingest/manifest.csv")
    labels = np.array([r.label for r in records])
    folds = folds_from_records(records, p.data.classes)
    splits = folds.val_splits()  # every repeat's folds
    classes = list(p.data.classes)
    results, confusion = compare.collect(
        labels, splits, classes, latency_repeats=p.evaluate.latency_repeats
    )
    compare.add_repeats(results, p.cv.folds)
    # n_test/n_train of one split, 1/(K-1), for the corrected resampled t-test.
    compared = compare.comparisons(results, test_fraction=1 / (p.cv.folds - 1))
    twins = duplicate_twins([r.sha1 for r in records], splits)
    details = compare.details(results, compared, twins, p.cv.group_by)
    write_json(REPORTS / "details.json", details)
    write_json(REPORTS / "metrics.json", compare.headline(compared, twins))
    # The ResNet rows and their section already state the weights each arch used.
    write_text(
        REPORTS / "comparison.md",
        comparison_markdown(
            results,
            protocol=p.cv.group_by,
            n_folds=len(splits),
            repeats=p.cv.repeats,
            comparisons=compared,
            weights_note=None,
            pruning={**p.prune.model_dump(), "epochs": p.cnn.epochs},
            generated_sample=compare.read_json("reports/ingest/details.json").get(
                "generated_sample", False
            ),
            twins=twins,
            class_names=classes,
        ),
    )
    reports.write_comparison_figures(REPORTS, results, confusion, classes)
    datasets.log_split_inputs(folds, folds.ids, p.data.raw, scored=True)
    tracking.log_comparison(compare.mlflow_metrics(results, details), REPORTS)
    registry.register_pipeline_models()
    if twins["total"]:
        print(
            f"warning: [evaluate] {twins['total']} validation images have an identical twin "
            "in their training part (see comparison.md)"
        )
    print("\n".join(f"[evaluate] {c['verdict']}" for c in compared.values()))
    print(f"[evaluate] -> {REPORTS}/comparison.md, {REPORTS}/metrics.json")


if __name__ == "__main__":
    run_stage("evaluate", main, sections=("evaluate", "cv", "prune"))
