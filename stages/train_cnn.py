"""train_cnn: the paper's CNN, K-fold cross-validated on the manifest's folds, epoch by epoch."""

import numpy as np

from emoprune import cnn_cv, crossval, reports, tracking
from emoprune.data.arrays import load_images
from emoprune.models.cnn import CNN, HIDDEN_LAYERS, count_parameters
from emoprune.outputs import atomic_path
from emoprune.params import Params
from emoprune.stage import run_stage
from emoprune.training import fit, resolve_device, seed_everything

OUT = "outputs/models/cnn"
REPORTS = "reports/train_cnn"


def main(p: Params) -> None:
    device = resolve_device(p.device)
    folds = crossval.load_folds(p.data.classes)
    images = load_images("cnn")
    n_classes = len(p.data.classes)
    per_fold, epoch_rows, trace_rows, predictions = {}, [], [], {}
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for k in folds.ids:
            seed_everything(cnn_cv.fold_seed(p.seed, k))
            data = crossval.fold_tensors(images, folds, k)
            model = CNN(n_classes, p.cnn.activation, in_size=p.resize.cnn, init=p.cnn.init).to(device)
            opt = cnn_cv.adam(model, p.cnn.lr)
            meta = {"fold": k, "mean": data.mean.tolist(), "std": data.std.tolist(),
                    "classes": list(p.data.classes)}
            trace = cnn_cv.AngleTrace(HIDDEN_LAYERS, p.cnn.trace_mode, None,
                                      data.x_train, device, k, tracking.log_metrics)
            history = fit(
                model, (data.x_train, data.y_train), (data.x_val, data.y_val), optimizer=opt,
                epochs=p.cnn.epochs, batch_size=p.cnn.batch_size, device=device,
                seed=cnn_cv.fold_seed(p.seed, k), augment=p.cnn.augment, desc=f"cnn fold {k}",
                callbacks=[tracking.epoch_logger(f"fold{k}/"), trace,
                           cnn_cv.CheckpointEvery(tmp, k, p.cnn.checkpoint_every, p.cnn.epochs,
                                                  opt, meta)],
            )
            cnn_cv.save_cnn(cnn_cv.checkpoint_path(tmp, k), model, epoch=p.cnn.epochs, **meta)
            # The last epoch's model is what we report: no best-epoch picking on validation.
            train = cnn_cv.score(model, data.x_train, data.y_train, n_classes, device)
            val = cnn_cv.score(model, data.x_val, data.y_val, n_classes, device)
            per_fold[k] = {"train_acc": train["acc"], "train_f1": train["f1"],
                           "val_acc": val["acc"], "val_f1": val["f1"],
                           "seconds_per_epoch": float(np.mean([h.seconds for h in history]))}
            predictions[k] = val["proba"]
            epoch_rows += [{"fold": k, **vars(h)} for h in history]
            trace_rows += trace.rows
            tracking.log_model(model, data.x_val[:2], f"model_fold{k}")
        np.savez(tmp / "val_proba.npz", **{f"fold{k}": v for k, v in predictions.items()})
    metrics = {
        **crossval.summarise(per_fold),
        "per_fold": {str(k): v for k, v in per_fold.items()},
        "n_params": count_parameters(model),
        "epochs": p.cnn.epochs,
        "n_folds": len(folds.ids),
    }
    reports.write_training_reports(REPORTS, "CNN", metrics, epoch_rows, trace_rows)
    print(f"[train_cnn] val acc {metrics['val_acc']['mean']:.3f} ± {metrics['val_acc']['std']:.3f}"
          f" over {len(folds.ids)} folds -> {OUT}/, {REPORTS}/")


if __name__ == "__main__":
    run_stage("train_cnn", main, sections=("seed", "device", "cnn", "resize"))
