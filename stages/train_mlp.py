"""train_mlp: the paper's PCA baseline. Per fold: scaler + PCA fit on the training part only,
the top components of LPQ and of PHOG, a sigmoid MLP trained on them, scored on the held-out fold."""

import mlflow
import numpy as np
import torch

from emoprune import cnn_cv, crossval, reports, tracking
from emoprune.checkpoints import save_checkpoint
from emoprune.features.pca import fit_descriptor_pca
from emoprune.models.mlp import mlp
from emoprune.outputs import atomic_path
from emoprune.params import Params
from emoprune.stage import run_stage
from emoprune.training import fit, resolve_device, seed_everything

FEATURES = "outputs/features"
OUT = "outputs/models/mlp"
REPORTS = "reports/train_mlp"


def main(p: Params) -> None:
    m = p.mlp
    device = resolve_device(p.device)
    folds = crossval.load_folds(p.data.classes)
    descriptors = {"lpq": np.load(f"{FEATURES}/lpq.npy"), "phog": np.load(f"{FEATURES}/phog.npy")}
    n_classes = len(p.data.classes)
    per_fold, epoch_rows, predictions = {}, [], {}
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for k in folds.ids:
            train, val = folds.split(k)
            seed = cnn_cv.fold_seed(p.seed, k)
            seed_everything(seed)
            # Fit on the training part only: the held-out fold never shapes the features.
            pcas = {name: fit_descriptor_pca(x[train], m.pca_components, seed)
                    for name, x in descriptors.items()}
            inputs = np.hstack([pcas[n].transform(descriptors[n]) for n in descriptors])
            x = torch.from_numpy(inputs.astype(np.float32))
            y = torch.from_numpy(folds.labels)
            model = mlp(x.shape[1], m.hidden, n_classes)
            opt = torch.optim.Adam(model.parameters(), lr=m.lr)
            history = fit(model, (x[train], y[train]), (x[val], y[val]), optimizer=opt,
                          epochs=m.epochs, batch_size=m.batch_size, device=device, seed=seed,
                          desc=f"mlp fold {k}", callbacks=[tracking.epoch_logger(f"fold{k}/")])
            tr = cnn_cv.score(model, x[train], y[train], n_classes, device)
            va = cnn_cv.score(model, x[val], y[val], n_classes, device)
            evr = {f"{n}_explained_variance": float(pc.explained_variance_ratio.sum())
                   for n, pc in pcas.items()}
            per_fold[k] = {"train_acc": tr["acc"], "train_f1": tr["f1"],
                           "val_acc": va["acc"], "val_f1": va["f1"], **evr}
            tracking.log_metrics({f"fold{k}/{key}": v for key, v in evr.items()}, step=0)
            predictions[k] = va["proba"]
            epoch_rows += [{"fold": k, **vars(h)} for h in history]
            save_checkpoint(tmp / f"fold{k}.pt", state_dict=model.cpu().state_dict(), meta={
                "n_inputs": int(x.shape[1]), "hidden": list(m.hidden), "n_classes": n_classes,
                "pca": {n: pc.to_meta() for n, pc in pcas.items()}, "fold": k,
                "classes": list(p.data.classes)})
            tracking.log_model(model, x[val][:2], f"model_fold{k}")
        np.savez(tmp / "val_proba.npz", **{f"fold{k}": v for k, v in predictions.items()})
    metrics = {**crossval.summarise(per_fold),
               "per_fold": {str(k): v for k, v in per_fold.items()},
               "n_inputs": 2 * m.pca_components, "epochs": m.epochs, "n_folds": len(folds.ids)}
    reports.write_training_reports(REPORTS, "PCA + MLP", metrics, epoch_rows)
    mlflow.log_metric("explained_variance_lpq", metrics["lpq_explained_variance"]["mean"])
    mlflow.log_metric("explained_variance_phog", metrics["phog_explained_variance"]["mean"])
    print(f"[train_mlp] val acc {metrics['val_acc']['mean']:.3f} ± {metrics['val_acc']['std']:.3f}"
          f" -> {OUT}/, {REPORTS}/")


if __name__ == "__main__":
    run_stage("train_mlp", main, sections=("seed", "device", "mlp"))
