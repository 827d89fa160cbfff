"""prune_cnn: resume each fold's CNN at prune.start_epoch and train on to cnn.epochs with
Gedeon's distinctiveness pruning, so pruned and unpruned CNNs get the same epoch budget; then the
equal-size controls (prune.baselines), which remove as many neurons at the same epochs, chosen
at random or by the smallest outgoing-weight norm."""

from emoprune.data.arrays import load_images
from emoprune.pipeline import reports, tracking
from emoprune.pipeline.logged_cv import cross_validate_logged
from emoprune.pipeline.outputs import atomic_path, write_json
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.pruning.baselines import schedule_from_log
from emoprune.pruning.callbacks import load_unpruned_trace
from emoprune.pruning.resume import control_fold, pruned_fold
from emoprune.training.crossval import channel_histograms, fold_tensors, load_folds

CNN_DIR, OUT, REPORTS = "outputs/models/cnn", "outputs/models/pruned", "reports/prune_cnn"


def main(p: Params) -> None:
    q, folds, images = p.prune, load_folds(p.data.classes), load_images("cnn")
    histograms = channel_histograms(images)  # the folds' stats for every variant, from one pass
    pruners, trace = [], load_unpruned_trace(CNN_DIR, q.mode)  # where pruning could first act

    def fit_fold(fold):
        data = fold_tensors(images, folds, fold.k, histograms)
        fit = pruned_fold(q, p.cnn, CNN_DIR, trace, data, fold, tracking.log_metrics)
        pruners.append(fit.notes["pruner"])
        return fit

    removed_ids = {kind: [] for kind in q.baselines}

    def fit_control(kind):
        def fit_fold(fold):
            data = fold_tensors(images, folds, fold.k, histograms)
            unpruned = firsts[fold.k]  # the unpruned run where the control's first removal is
            fit = control_fold(kind, schedules[fold.k], q, p.cnn, CNN_DIR, data, fold, unpruned)
            removed_ids[kind] += [{"fold": fold.k, **r} for r in fit.notes["removal"].log]
            return fit

        return fit_fold

    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        cv = cross_validate_logged(p, fit_fold, tmp, model_name="shrunk_fold{k}")
        log_ids = [row for r in pruners for row in r.log_ids]
        schedules = {k: schedule_from_log(log_ids, k) for k in cv.per_fold}
        firsts = {r.fold: r.before_first_removal for r in pruners}
        controls = {  # same counts, same epochs, same seeds and batches
            kind: cross_validate_logged(
                p, fit_control(kind), tmp / kind, model_name=kind + "_fold{k}", prefix=kind + "/"
            )
            for kind in q.baselines
        }
    details = cv.summary(threshold=q.threshold, layers=list(q.layers))
    details["baselines"] = {
        k: {**c.summary(), "removed_ids": removed_ids[k]} for k, c in controls.items()
    }
    write_json(f"{REPORTS}/pruned_ids.json", log_ids)
    rows = [row for r in pruners for row in r.rows]
    reports.write_training_reports(REPORTS, f"Pruned CNN (t={q.threshold:g})", cv.epoch_rows, rows)
    reports.write_angle_histograms(REPORTS, pruners, q.threshold)
    reports.write_metrics(REPORTS, reports.pruned_headline(details, q.layers), details)
    reports.print_cv("prune_cnn", details, OUT, REPORTS)
    for kind, b in details["baselines"].items():
        reports.print_cv(f"prune_cnn: {kind}", b, f"{OUT}/{kind}")


if __name__ == "__main__":
    run_stage("prune_cnn", main, sections=("seed", "device", "precision", "cnn", "prune"))
