"""features: LPQ (256-d) and PHOG (680-d) descriptors of every frame, in manifest order."""

import time

import mlflow
import numpy as np

from emoprune.data.arrays import load_images
from emoprune.data.folds import load_folds
from emoprune.errors import UserError
from emoprune.evaluation import figures
from emoprune.features import compute_descriptors
from emoprune.pipeline.outputs import atomic_path, write_json
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage

OUT = "outputs/features"


def main(p: Params) -> None:
    f = p.features
    images = load_images("cnn")
    lpq_kw = {"win_size": f.lpq_win_size, "decorrelate": f.lpq_decorrelate, "rho": f.lpq_rho}
    phog_kw = {"bins": f.phog_bins, "angle": f.phog_angle, "levels": f.phog_levels}
    start = time.perf_counter()
    try:
        lpq, phog = compute_descriptors(
            np.asarray(images), lpq_kwargs=lpq_kw, phog_kwargs=phog_kw, progress=True
        )
    except ValueError as exc:
        raise UserError(f"features: {exc}") from None
    seconds = time.perf_counter() - start
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        np.save(tmp / "lpq.npy", lpq)
        np.save(tmp / "phog.npy", phog)
        write_json(
            tmp / "params.json",
            {
                "lpq": lpq_kw,
                "phog": phog_kw,
                "image_size": int(images.shape[1]),
                "gray": "rgb2gray",
            },
        )
    folds = load_folds(p.data.classes)
    mlflow.log_metrics(
        {
            "seconds": seconds,
            "ms_per_image": 1000 * seconds / len(lpq),
            "lpq_dim": lpq.shape[1],
            "phog_dim": phog.shape[1],
        }
    )
    fig = figures.class_means({"LPQ": lpq, "PHOG": phog}, folds.labels, p.data.classes)
    mlflow.log_figure(fig, "descriptor_means.png")
    figures.close(fig)
    print(f"[features] LPQ {lpq.shape} and PHOG {phog.shape} in {seconds:.1f} s -> {OUT}/")


if __name__ == "__main__":
    run_stage("features", main, sections=("features",))
