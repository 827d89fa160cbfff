"""MLflow's model registry: each pipeline run's CNN and pruned CNN as versions of
``emoprune-cnn`` and ``emoprune-pruned-cnn``.

The training stages tag every logged fold model with the SHA-256 of the checkpoint it was made
from. evaluate hashes the checkpoint in the workspace and registers the logged model with that
tag, so the version's source run is the training run that produced those weights, also when DVC
restored them from its cache. Only a checkpoint no run logged (a store that was reset) is logged
again, by evaluate's own run.

The registered model is fold ``FOLD``'s (trained on the other folds): the cross-validated mean and
std on the version's tags are the estimate of how well it does; picking the best fold would
choose on the test folds. Each version carries the params and headline metrics as tags, and the
alias named after the DVC experiment (``@workspace`` for a plain ``dvc repro``, ``@t15`` for
``dvc exp run -n t15``) moves to it. ``models:/emoprune-pruned-cnn@latest`` is MLflow's own
name for the newest version (``latest`` is reserved; it cannot be set, it always points there).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CHECKPOINT_TAG = "emoprune.checkpoint_sha256"
FOLD = 0
# model -> (registered name, checkpoint folder, the name its stage logs it under)
REGISTERED = {
    "cnn": ("emoprune-cnn", "outputs/models/cnn", "model_fold{k}"),
    "pruned": ("emoprune-pruned-cnn", "outputs/models/pruned", "shrunk_fold{k}"),
}
DESCRIPTIONS = {
    "cnn": "The paper's CNN, as the pipeline trains it (train_cnn).",
    "pruned": "The CNN after distinctiveness pruning, shrunk to its live units (prune_cnn).",
}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tag_logged_model(model_id: str, checkpoint: str | Path) -> None:
    """Tag logged model ``model_id`` with the SHA-256 of the ``checkpoint`` it was made from."""
    import mlflow

    mlflow.set_logged_model_tags(model_id, {CHECKPOINT_TAG: sha256(checkpoint)})


def find_logged(experiment_id: str, name: str, digest: str) -> str | None:
    """The id of the newest model logged as ``name`` from a checkpoint with ``digest``."""
    import mlflow

    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"name = '{name}' AND tags.`{CHECKPOINT_TAG}` = '{digest}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
        output_format="list",
    )
    return found[0].model_id if found else None


def alias_for(exp_name: str) -> str:
    """A valid alias from a DVC experiment name (letters, digits, ``_`` and ``-``)."""
    alias = re.sub(r"[^\w-]+", "-", exp_name).strip("-") or "workspace"
    if alias.lower() == "latest" or re.fullmatch(r"v\d+", alias, re.IGNORECASE):
        alias = f"exp-{alias}"  # reserved by MLflow: "latest" and version-like "v3"
    return alias


def version_tags(
    model: str, params: Mapping[str, Any], metrics: Mapping[str, float], run_tags: Mapping[str, str]
) -> dict[str, str]:
    """The tags of a new version: every param, every headline metric, and where it came from."""
    tags = {f"param.{k}": str(v) for k, v in params.items()}
    tags |= {f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}
    tags |= {
        k: str(run_tags[k]) for k in ("dvc.exp_name", "git.commit", "pipeline.id") if k in run_tags
    }
    return tags | {"model": model, "fold": str(FOLD)}


def register_models(
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    log_again: Callable[[str, Path, str], str] | None = None,
) -> list[tuple[str, str, str]]:
    """Register this pipeline's CNN and pruned CNN from the active (evaluate) run.

    ``log_again(model, checkpoint, name)`` logs a checkpoint no run logged and returns the new
    model id; without it such a model is skipped with a warning. Returns (registered name,
    version, alias) of each version made.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = mlflow.active_run()
    experiment_id = run.info.experiment_id
    run_tags = client.get_run(run.info.run_id).data.tags
    alias = alias_for(run_tags.get("dvc.exp_name", "workspace"))
    made = []
    for model, (registered, folder, logged) in REGISTERED.items():
        checkpoint = Path(folder) / f"fold{FOLD}.pt"
        if not checkpoint.is_file():
            continue
        digest = sha256(checkpoint)
        name = logged.format(k=FOLD)
        model_id = find_logged(experiment_id, name, digest)
        if model_id is None:
            if log_again is None:
                print(f"warning: no MLflow model was logged from {checkpoint}; not registered")
                continue
            model_id = log_again(model, checkpoint, name)
            tag_logged_model(model_id, checkpoint)
        tags = version_tags(model, params, metrics, run_tags) | {CHECKPOINT_TAG: digest}
        version = mlflow.register_model(f"models:/{model_id}", registered, tags=tags)
        client.set_registered_model_alias(registered, alias, version.version)
        if not client.get_registered_model(registered).description:
            client.update_registered_model(registered, description=DESCRIPTIONS[model])
        made.append((registered, str(version.version), alias))
    return made


def log_again(model: str, checkpoint: Path, name: str) -> str:
    """Log ``checkpoint`` as ``name`` on the active run, as its stage would have; the model id."""
    import tempfile

    from emoprune.pipeline import packaged, tracking

    with tempfile.TemporaryDirectory() as scratch:
        package = packaged.package(checkpoint, scratch, kind=model, name=name, fold=FOLD)
        return tracking.log_model(package, name).model_id


def register_pipeline_models() -> None:
    """evaluate's registration: every param of params.yaml and every headline metric as tags."""
    from emoprune.pipeline.tracking import flatten, headline_metrics, read_yaml

    params = flatten(read_yaml("params.yaml"))
    for name, version, alias in register_models(params, headline_metrics(), log_again):
        print(f"[evaluate] registered {name} version {version} (models:/{name}@{alias})")
