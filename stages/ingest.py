"""ingest: validate data/raw, fix the stratified folds, write the manifest and a report."""

import sys
from collections import Counter

import mlflow

from emoprune.data.ingest import (
    build_manifest,
    display_path,
    fold_report,
    is_generated_sample,
    manifest_csv,
)
from emoprune.evaluation import figures
from emoprune.pipeline.outputs import write_json, write_text
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.pipeline.tracking import log_folder

MANIFEST = "outputs/ingest/manifest.csv"
REPORTS = "reports/ingest"


def main(p: Params) -> None:
    cv = p.cv
    records, skipped = build_manifest(
        p.data.raw, p.data.classes, cv.folds, cv.seed, cv.group_by, cv.repeats
    )
    for s in skipped:
        print(f"warning: skipped {s.path}: {s.reason}", file=sys.stderr)
    counts = Counter(r.emotion for r in records)
    per_class = {c: counts[c] for c in p.data.classes}
    converted = [
        {"path": display_path(r.path), "note": r.checks} for r in records if r.checks != "ok"
    ]
    report = {
        "n_images": len(records),
        "per_class": per_class,
        **fold_report(records, p.cv.folds),
        "group_by": p.cv.group_by,
        "generated_sample": is_generated_sample(p.data.raw),
        "n_clips": len({r.clip for r in records}),
        "skipped": [vars(s) for s in skipped],
        "converted": converted,
    }
    write_text(MANIFEST, manifest_csv(records))
    write_json(f"{REPORTS}/details.json", report)
    # The data's counts, named apart from the models' columns in `dvc exp show`.
    headline = {"n_images": len(records), "n_skipped": len(skipped), "per_class": per_class}
    write_json(f"{REPORTS}/metrics.json", {"data": headline})
    mlflow.set_tag("data.generated_sample", str(report["generated_sample"]).lower())
    mlflow.log_metrics(
        {
            "n_images": len(records),
            "n_skipped": len(skipped),
            "n_converted": len(converted),
            **{f"n_{c}": n for c, n in per_class.items()},
        }
    )
    fig = figures.class_distribution(per_class)
    mlflow.log_figure(fig, "reports/class_distribution.png")
    figures.close(fig)
    log_folder(REPORTS, "reports")
    print(f"[ingest] {len(records)} images ({len(skipped)} skipped) -> {MANIFEST}, {REPORTS}/")


if __name__ == "__main__":
    run_stage("ingest", main, sections=("data", "cv"))
