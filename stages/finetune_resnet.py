"""finetune_resnet: torchvision's ResNet18/34/50 fine-tuned on the manifest's folds, offline-safe.

The weights actually used (ImageNet from the local torch cache, or random init) are tagged on the
run and written in the metrics, so nobody mistakes a from-scratch ResNet for transfer learning.
"""

import mlflow
import numpy as np
import torch

from emoprune.data.arrays import load_images
from emoprune.models.cnn import count_parameters
from emoprune.models.resnet import prepare_inputs
from emoprune.pipeline import reports
from emoprune.pipeline.logged_cv import cross_validate_logged
from emoprune.pipeline.outputs import atomic_path
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.training.crossval import load_folds
from emoprune.training.recipes import finetune_resnet_fold

OUT, REPORTS = "outputs/models/resnet", "reports/finetune_resnet"


def main(p: Params) -> None:
    f, folds = p.finetune, load_folds(p.data.classes)
    x, y = prepare_inputs(np.asarray(load_images("resnet"))), torch.from_numpy(folds.labels)
    fold_ids = folds.ids if f.folds == "all" else folds.ids[: int(f.folds)]
    details, metrics = {}, {}
    with atomic_path(OUT) as tmp:
        for arch in f.archs:
            (tmp / arch).mkdir(parents=True)
            cv = cross_validate_logged(
                p,
                lambda fold, arch=arch: finetune_resnet_fold(
                    f, arch, x, y, folds.split(fold.k), fold
                ),
                tmp / arch,
                model_name=arch + "_fold{k}",
                fold_ids=fold_ids,
                prefix=arch + "/",
            )
            weights, n_params = cv.last.notes["weights"], count_parameters(cv.last.model)
            details[arch] = cv.summary(
                folds=fold_ids,
                weights=weights,
                epochs=f.epochs,
                pretrained=weights == "imagenet",
                n_params=n_params,
            )
            metrics.update(reports.headline(arch, details[arch], n_params))
            title = f"{arch} ({weights} init)"
            reports.write_training_reports(
                REPORTS, title, cv.epoch_rows, name=arch, log_prefix=arch + "/"
            )
            reports.flag_plateau(details[arch], prefix=arch + "/")
            reports.print_cv(f"finetune_resnet {title}", details[arch], OUT)
    reports.write_metrics(REPORTS, metrics, details)
    used = "+".join(sorted({m["weights"] for m in details.values()}))
    mlflow.set_tag("weights", used)
    if used != "imagenet":
        print(
            f"warning: [finetune_resnet] weights={used}: NOT ImageNet transfer learning "
            f"(no cached IMAGENET1K_V1 file; see finetune.weights in the README)"
        )


if __name__ == "__main__":
    run_stage("finetune_resnet", main, sections=("seed", "device", "finetune", "resize"))
