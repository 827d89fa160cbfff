"""finetune_resnet: torchvision's ResNet18/34/50 fine-tuned on the manifest's folds, offline-safe.

The weights actually used (ImageNet from the local torch cache, or random init) are tagged on the
run and written in the metrics, so nobody mistakes a from-scratch ResNet for transfer learning.
"""

import mlflow
import numpy as np
import torch

from emoprune import cnn_cv, crossval, reports, tracking
from emoprune.checkpoints import save_checkpoint
from emoprune.data.arrays import load_images
from emoprune.models.cnn import count_parameters
from emoprune.models.resnet import build_resnet, make_optimizer_and_scheduler, prepare_inputs
from emoprune.outputs import atomic_path, write_json
from emoprune.params import Params
from emoprune.stage import run_stage
from emoprune.training import fit, resolve_device, seed_everything

OUT = "outputs/models/resnet"
REPORTS = "reports/finetune_resnet"


def main(p: Params) -> None:
    f = p.finetune
    device = resolve_device(p.device)
    folds = crossval.load_folds(p.data.classes)
    images = load_images("resnet")
    x_all = prepare_inputs(np.asarray(images))
    y_all = torch.from_numpy(folds.labels)
    fold_ids = folds.ids if f.folds == "all" else folds.ids[: int(f.folds)]
    n_classes = len(p.data.classes)
    summary: dict = {}
    weights_used = set()
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for arch in f.archs:
            per_fold, epoch_rows, predictions = {}, [], {}
            for k in fold_ids:
                train, val = folds.split(k)
                seed = cnn_cv.fold_seed(p.seed, k)
                seed_everything(seed)
                model, weights = build_resnet(arch, n_classes, f.weights, f.freeze_backbone)
                weights_used.add(weights)
                opt, sched = make_optimizer_and_scheduler(model, f.lr, f.momentum,
                                                          f.weight_decay, f.step_size, f.gamma)
                history = fit(model, (x_all[train], y_all[train]), (x_all[val], y_all[val]),
                              optimizer=opt, scheduler=sched, epochs=f.epochs,
                              batch_size=f.batch_size, device=device, seed=seed,
                              desc=f"{arch} fold {k}",
                              callbacks=[tracking.epoch_logger(f"{arch}/fold{k}/")])
                tr = cnn_cv.score(model, x_all[train], y_all[train], n_classes, device)
                va = cnn_cv.score(model, x_all[val], y_all[val], n_classes, device)
                per_fold[k] = {"train_acc": tr["acc"], "train_f1": tr["f1"],
                               "val_acc": va["acc"], "val_f1": va["f1"]}
                predictions[k] = va["proba"]
                epoch_rows += [{"fold": k, **vars(h)} for h in history]
                (tmp / arch).mkdir(exist_ok=True)
                save_checkpoint(tmp / arch / f"fold{k}.pt",
                                state_dict={n: t.detach().cpu()
                                            for n, t in model.state_dict().items()},
                                meta={"arch": arch, "weights": weights, "fold": k,
                                      "n_classes": n_classes, "classes": list(p.data.classes)})
                tracking.log_model(model, x_all[val][:1], f"{arch}_fold{k}")
            np.savez(tmp / arch / "val_proba.npz",
                     **{f"fold{k}": v for k, v in predictions.items()})
            summary[arch] = {**crossval.summarise(per_fold),
                             "per_fold": {str(k): v for k, v in per_fold.items()},
                             "folds": fold_ids, "weights": weights,
                             "pretrained": weights == "imagenet",
                             "n_params": count_parameters(model), "epochs": f.epochs}
            reports.write_training_reports(f"{REPORTS}/{arch}", f"{arch} ({weights} init)",
                                           summary[arch], epoch_rows)
    write_json(f"{REPORTS}/metrics.json", summary)
    used = "+".join(sorted(weights_used))
    mlflow.set_tag("weights", used)
    if used != "imagenet":
        print(f"warning: [finetune_resnet] weights={used}: NOT ImageNet transfer learning "
              f"(no cached IMAGENET1K_V1 file; see finetune.weights in the README)")
    for arch, m in summary.items():
        print(f"[finetune_resnet] {arch} ({m['weights']} init): val acc "
              f"{m['val_acc']['mean']:.3f} on folds {fold_ids} -> {OUT}/{arch}/")


if __name__ == "__main__":
    run_stage("finetune_resnet", main, sections=("seed", "device", "finetune", "resize"))
