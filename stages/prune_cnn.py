"""prune_cnn: resume each fold's CNN at prune.start_epoch and train on to cnn.epochs with
Gedeon's distinctiveness pruning, so pruned and unpruned CNNs get the same epoch budget."""

import mlflow
import numpy as np

from emoprune import cnn_cv, crossval, plots, reports, tracking
from emoprune.data.arrays import load_images
from emoprune.errors import UserError
from emoprune.outputs import atomic_path, write_json
from emoprune.params import Params
from emoprune.pruning import PruneMask, model_size_and_latency, shrink
from emoprune.stage import run_stage
from emoprune.training import fit, resolve_device, seed_everything

CNN_DIR = "outputs/models/cnn"
OUT = "outputs/models/pruned"
REPORTS = "reports/prune_cnn"


def main(p: Params) -> None:
    device = resolve_device(p.device)
    folds = crossval.load_folds(p.data.classes)
    images = load_images("cnn")
    n_classes = len(p.data.classes)
    q = p.prune
    per_fold, epoch_rows, trace_rows, id_log, predictions = {}, [], [], [], {}
    hist_first, hist_last = {}, {}
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for k in folds.ids:
            model, meta, opt_state = cnn_cv.load_cnn_checkpoint(
                cnn_cv.checkpoint_path(CNN_DIR, k, q.start_epoch))
            if opt_state is None:
                raise UserError(f"{cnn_cv.checkpoint_path(CNN_DIR, k, q.start_epoch)}: "
                                       "no optimizer state to resume from")
            seed_everything(cnn_cv.fold_seed(p.seed, k))
            data = crossval.fold_tensors(images, folds, k)
            model.to(device)
            opt = cnn_cv.adam(model, p.cnn.lr, opt_state)
            mask = PruneMask(model, q.layers)
            mask.attach(opt)
            before = cnn_cv.score(model, data.x_val, data.y_val, n_classes, device)
            after_first = {}

            def first_prune(m, data=data, after_first=after_first):
                after_first.update(cnn_cv.score(m, data.x_val, data.y_val, n_classes, device))

            pruner = cnn_cv.Pruner(
                mask, complementary=q.complementary, start_epoch=q.start_epoch, every=q.every,
                on_first_prune=first_prune, mode=q.mode, threshold=q.threshold,
                x_train=data.x_train, device=device, fold=k, log=tracking.log_metrics)
            # The trace starts from the checkpoint pruning resumes (step = start_epoch).
            pruner.record(q.start_epoch, model, pruner.activations(model))
            history = fit(
                model, (data.x_train, data.y_train), (data.x_val, data.y_val), optimizer=opt,
                epochs=p.cnn.epochs, batch_size=p.cnn.batch_size, device=device,
                seed=cnn_cv.fold_seed(p.seed, k), start_epoch=q.start_epoch,
                augment=p.cnn.augment, desc=f"prune fold {k}",
                callbacks=[tracking.epoch_logger(f"fold{k}/"), pruner])
            mask.detach()
            mask.apply()
            cnn_cv.save_cnn(cnn_cv.checkpoint_path(tmp, k), model,
                            **{**meta, "epoch": p.cnn.epochs, "pruned": mask.state()})
            small = shrink(model.cpu(), mask)
            size_full = model_size_and_latency(model.cpu(), threads=1)
            size_small = model_size_and_latency(small, threads=1)
            model.to(device)
            end = cnn_cv.score(model, data.x_val, data.y_val, n_classes, device)
            train = cnn_cv.score(model, data.x_train, data.y_train, n_classes, device)
            per_fold[k] = {
                "val_acc_before": before["acc"], "val_f1_before": before["f1"],
                "val_acc_after_first_prune": after_first.get("acc", before["acc"]),
                "val_f1_after_first_prune": after_first.get("f1", before["f1"]),
                "train_acc": train["acc"], "train_f1": train["f1"],
                "val_acc": end["acc"], "val_f1": end["f1"],
                **{f"{layer}_left": int(mask.alive(layer).sum()) for layer in q.layers},
                "params_unpruned": size_full["params"], "params_shrunk": size_small["params"],
                "latency_ms_unpruned": size_full["latency_ms"],
                "latency_ms_shrunk": size_small["latency_ms"],
            }
            predictions[k] = end["proba"]
            epoch_rows += [{"fold": k, **vars(h)} for h in history]
            trace_rows += pruner.rows
            id_log += pruner.log_ids
            for layer, values in pruner.histograms.get("first", {}).items():
                hist_first.setdefault(layer, []).append(values)
                hist_last.setdefault(layer, []).append(pruner.histograms["last"][layer])
            tracking.log_model(small, data.x_val[:2], f"shrunk_fold{k}")
        np.savez(tmp / "val_proba.npz", **{f"fold{k}": v for k, v in predictions.items()})
    metrics = {
        **crossval.summarise(per_fold),
        "per_fold": {str(k): v for k, v in per_fold.items()},
        "threshold": q.threshold,
        "layers": list(q.layers),
        "n_folds": len(folds.ids),
    }
    write_json(f"{REPORTS}/pruned_ids.json", id_log)
    reports.write_training_reports(REPORTS, f"Pruned CNN (t={q.threshold:g})", metrics,
                                   epoch_rows, trace_rows)
    if hist_first:
        fig = plots.angle_histograms({l: np.concatenate(v) for l, v in hist_first.items()},
                                     {l: np.concatenate(v) for l, v in hist_last.items()},
                                     q.threshold)
        mlflow.log_figure(fig, "angle_histograms.png")
        plots.save(fig, f"{REPORTS}/angle_histograms.png")
    m = metrics
    print(f"[prune_cnn] val acc {m['val_acc_before']['mean']:.3f} at epoch {q.start_epoch} -> "
          f"{m['val_acc']['mean']:.3f} ± {m['val_acc']['std']:.3f} at {p.cnn.epochs}; "
          + ", ".join(f"{l}: {m[f'{l}_left']['mean']:.0f} neurons left" for l in q.layers)
          + f" -> {OUT}/, {REPORTS}/")


if __name__ == "__main__":
    run_stage("prune_cnn", main, sections=("seed", "device", "cnn", "prune"))
