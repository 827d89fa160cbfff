"""train_cnn: the paper's CNN, K-fold cross-validated on the manifest's folds, epoch by epoch."""

from emoprune.choices import HIDDEN_LAYERS
from emoprune.data.arrays import load_images
from emoprune.models.cnn import count_parameters
from emoprune.pipeline import reports, tracking
from emoprune.pipeline.logged_cv import cross_validate_logged
from emoprune.pipeline.outputs import atomic_path
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.pruning.callbacks import AngleTrace, save_unpruned_trace
from emoprune.training.crossval import channel_histograms, fold_tensors, load_folds
from emoprune.training.loop import resolve_device
from emoprune.training.recipes import train_cnn_fold

OUT, REPORTS = "outputs/models/cnn", "reports/train_cnn"


def main(p: Params) -> None:
    device, folds, images = resolve_device(p.device), load_folds(p.data.classes), load_images("cnn")
    histograms = channel_histograms(images)  # each fold's normalisation stats, from one pass
    rows = []  # the traces' rows; not the traces, which hold their fold's images

    def fit_fold(fold):
        data = fold_tensors(images, folds, fold.k, histograms)
        trace = AngleTrace(
            HIDDEN_LAYERS,
            p.cnn.trace_mode,
            None,
            data.x_train,
            device,
            fold.k,
            tracking.log_metrics,
        )
        fit = train_cnn_fold(p.cnn, data, fold.with_callbacks(trace), in_size=p.resize.cnn)
        rows.extend(trace.rows)
        return fit

    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        cv = cross_validate_logged(p, fit_fold, tmp, model_name="model_fold{k}")
        save_unpruned_trace(tmp, p.cnn.trace_mode, cv.epoch_rows, rows)  # prune_cnn skips ahead
    n_params = count_parameters(cv.last.model)
    details = cv.summary(n_params=n_params, epochs=p.cnn.epochs)
    reports.write_training_reports(REPORTS, "CNN", cv.epoch_rows, rows)
    reports.write_metrics(REPORTS, reports.headline("cnn", details, n_params), details)
    reports.print_cv("train_cnn", details, OUT, REPORTS)


if __name__ == "__main__":
    run_stage("train_cnn", main, sections=("seed", "device", "precision", "cnn", "resize"))
