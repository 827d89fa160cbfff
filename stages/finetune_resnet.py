"""finetune_resnet: torchvision's ResNet18/34/50 fine-tuned on the manifest's folds, offline-safe.

The weights actually used (ImageNet from the DVC-tracked models/pretrained/, or random init) are
tagged on the run and written in the metrics with the file's SHA-256, so nobody mistakes a
from-scratch ResNet for transfer learning.
"""

import mlflow
import numpy as np
import torch

from emoprune.data.arrays import load_images
from emoprune.data.folds import load_folds
from emoprune.models.cnn import count_parameters
from emoprune.models.resnet import PRETRAINED_DIR, placed_weights, prepare_inputs
from emoprune.pipeline import reports
from emoprune.pipeline.logged_cv import cross_validate_logged
from emoprune.pipeline.outputs import atomic_path
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage
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
                    f, arch, x, y, folds.split(fold.k), fold, weights_dirs=[PRETRAINED_DIR]
                ),
                tmp / arch,
                model_name=arch + "_fold{k}",
                fold_ids=fold_ids,
                prefix=arch + "/",
            )
            weights, net = cv.last.notes["weights"], cv.last.network
            file = placed_weights(PRETRAINED_DIR).get(arch) if weights == "imagenet" else None
            details[arch] = cv.summary(
                folds=fold_ids, weights=weights, weights_file=file, epochs=f.epochs,
                pretrained=weights == "imagenet", n_params=(n_params := count_parameters(net)),
            )  # fmt: skip
            if file:
                mlflow.set_tag(f"{arch}.weights_sha256", file["sha256"])
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
            f"(no IMAGENET1K_V1 file in {PRETRAINED_DIR}/; `make weights` fetches it)"
        )


if __name__ == "__main__":
    run_stage("finetune_resnet", main, ("seed", "device", "precision", "finetune", "resize"))
