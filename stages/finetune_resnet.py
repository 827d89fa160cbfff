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
from emoprune.pipeline.outputs import atomic_path, write_json
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
from emoprune.training.crossval import load_folds
from emoprune.training.recipes import finetune_resnet_fold

OUT, REPORTS = "outputs/models/resnet", "reports/finetune_resnet"


def main(p: Params) -> None:
    f, folds = p.finetune, load_folds(p.data.classes)
    x, y = prepare_inputs(np.asarray(load_images("resnet"))), torch.from_numpy(folds.labels)
    fold_ids = folds.ids if f.folds == "all" else folds.ids[: int(f.folds)]
    summary = {}
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
            weights = cv.last.notes["weights"]
            summary[arch] = cv.summary(
                folds=fold_ids,
                weights=weights,
                epochs=f.epochs,
                pretrained=weights == "imagenet",
                n_params=count_parameters(cv.last.model),
            )
            reports.write_training_reports(
                f"{REPORTS}/{arch}", f"{arch} ({weights} init)", summary[arch], cv.epoch_rows
            )
            reports.print_cv(f"finetune_resnet {arch} ({weights} init)", summary[arch], OUT)
    write_json(f"{REPORTS}/metrics.json", summary)
    used = "+".join(sorted({m["weights"] for m in summary.values()}))
    mlflow.set_tag("weights", used)
    if used != "imagenet":
        print(
            f"warning: [finetune_resnet] weights={used}: NOT ImageNet transfer learning "
            f"(no cached IMAGENET1K_V1 file; see finetune.weights in the README)"
        )


if __name__ == "__main__":
    run_stage("finetune_resnet", main, sections=("seed", "device", "finetune", "resize"))
