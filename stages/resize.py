"""resize: every manifest frame to uint8 arrays at the CNN's and ResNet's input sizes."""

import time

import mlflow
import numpy as np

from emoprune.data.ingest import read_manifest
from emoprune.data.resize import resize_all
from emoprune.pipeline.outputs import atomic_path, write_json
from emoprune.pipeline.params import Params
from emoprune.pipeline.stage import run_stage

MANIFEST = "outputs/ingest/manifest.csv"
OUT = "outputs/resize"


def main(p: Params) -> None:
    records = read_manifest(MANIFEST)
    sizes = {"cnn": p.resize.cnn, "resnet": p.resize.resnet}
    start = time.perf_counter()
    arrays = resize_all([r.path for r in records], list(sizes.values()))
    seconds = time.perf_counter() - start
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for (model, size), arr in zip(sizes.items(), arrays):
            np.save(tmp / f"{model}_{size}.npy", arr)
        write_json(
            tmp / "meta.json",
            {
                "n_images": len(records),
                "sizes": sizes,
                "files": {m: f"{m}_{s}.npy" for m, s in sizes.items()},
            },
        )
    mlflow.log_metrics(
        {
            "n_images": len(records),
            "seconds": seconds,
            "ms_per_image": 1000 * seconds / max(len(records), 1),
        }
    )
    print(f"[resize] {len(records)} frames at {sizes} in {seconds:.1f} s -> {OUT}/")


if __name__ == "__main__":
    run_stage("resize", main, sections=("resize",))
