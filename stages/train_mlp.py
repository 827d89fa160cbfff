"""train_mlp: the paper's PCA baseline. Per fold: scaler + PCA fit on the training part only,
the top components of LPQ and of PHOG, a sigmoid MLP trained on them, scored on its own fold."""

import mlflow
import numpy as np

from emoprune.data.folds import load_folds
from emoprune.models.cnn import count_parameters
from emoprune.pipeline import reports, tracking
from emoprune.pipeline.logged_cv import cross_validate_logged
from emoprune.pipeline.outputs import atomic_path
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.training.recipes import check_pca_components, train_mlp_fold

FEATURES, OUT, REPORTS = "outputs/features", "outputs/models/mlp", "reports/train_mlp"


def main(p: Params) -> None:
    folds = load_folds(p.data.classes)
    descriptors = {n: np.load(f"{FEATURES}/{n}.npy") for n in ("lpq", "phog")}
    train_sizes = [len(folds.split(k)[0]) for k in folds.ids]
    check_pca_components(p.mlp.pca_components, descriptors, train_sizes)

    def fit_fold(fold):
        fit = train_mlp_fold(p.mlp, descriptors, folds.labels, folds.split(fold.k), fold)
        tracking.log_metrics({f"fold{fold.k}/{m}": v for m, v in fit.metrics.items()}, step=0)
        return fit

    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        cv = cross_validate_logged(p, fit_fold, tmp, model_name="model_fold{k}", conv_net=False)
    n_params = count_parameters(cv.last.model)
    details = cv.summary(n_inputs=2 * p.mlp.pca_components, n_params=n_params, epochs=p.mlp.epochs)
    reports.write_training_reports(REPORTS, "PCA + MLP", cv.epoch_rows)
    reports.write_metrics(REPORTS, reports.headline("mlp", details, n_params), details)
    for n in descriptors:
        mlflow.log_metric(f"explained_variance_{n}", details[f"{n}_explained_variance"]["mean"])
    reports.print_cv("train_mlp", details, OUT, REPORTS)


if __name__ == "__main__":
    run_stage("train_mlp", main, sections=("seed", "device", "mlp"))
