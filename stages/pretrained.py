"""pretrained: put the ImageNet weights finetune_resnet uses under models/pretrained/ (a DVC out).

For each arch of finetune.archs: the IMAGENET1K_V1 file is kept if there, else copied from
torch's hub cache, else downloaded from torchvision's URL with torch's hash check (a bar on the
console; offline it fails in seconds). finetune.weights=imagenet stops on a failure; auto
records it and finetune_resnet falls back to random init, loudly. weights.json lists what is
there. The folder is a DVC output, so `dvc push` shares the files and a changed file reruns
finetune_resnet; `make weights` reruns this stage (e.g. once a machine is online).
"""

import sys

from emoprune.errors import UserError
from emoprune.models.resnet import PRETRAINED_DIR, place_weights
from emoprune.pipeline.outputs import write_json
from emoprune.pipeline.params import load_params
from emoprune.pipeline.process import exit_now


def main() -> int:
    try:
        f = load_params().finetune
        found = {}
        for arch in f.archs if f.weights != "none" else ():
            try:
                found[arch], how = place_weights(arch, PRETRAINED_DIR)
                print(f"[pretrained] {arch}: {found[arch]['file']} {how}", file=sys.stderr)
            except UserError as exc:
                if f.weights == "imagenet":
                    raise
                print(f"warning: [pretrained] {exc}; {arch} will start from random init")
                # weights.json says only what is there, so its hash (and finetune_resnet's
                # cache) depends on the files, not on how or where they were fetched.
                found[arch] = {"file": None}
        write_json(PRETRAINED_DIR / "weights.json", {"weights": f.weights, "archs": found})
    except UserError as exc:
        print(f"error: [pretrained] {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    exit_now(main())
