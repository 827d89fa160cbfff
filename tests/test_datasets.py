"""MLflow datasets of the splits: names, digest (the data's DVC hash), contexts and rows."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from emoprune.pipeline import datasets
from emoprune.training.crossval import Folds

HASH = "ff102afd656ee32b64c38463d1cff433"


@pytest.fixture
def project(clean_env, tmp_path):
    """A project folder with data.dvc, a 6-image manifest in 3 folds, and a fresh store."""
    clean_env.chdir(tmp_path)
    (tmp_path / "data.dvc").write_text(f"outs:\n- path: data/raw\n  md5: {HASH}.dir\n")
    manifest = tmp_path / "outputs" / "ingest" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    rows = [
        f"data/raw/{c}/{i}.png,{c},{j},{i % 3}" for i, (j, c) in enumerate([(0, "A"), (1, "B")] * 3)
    ]
    manifest.write_text("path,emotion,label,fold\n" + "\n".join(rows) + "\n")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    folds = Folds(np.array([0, 1] * 3), np.array([[i % 3 for i in range(6)]]), 3, ("A", "B"))
    yield tmp_path, folds
    mlflow.end_run()


def _inputs(run_id):
    return {
        i.dataset.name: (i.dataset, {t.key: t.value for t in i.tags})
        for i in mlflow.get_run(run_id).inputs.dataset_inputs
    }


def test_each_split_is_a_train_and_a_validation_dataset_with_the_data_version(project):
    root, folds = project
    with mlflow.start_run() as run:
        assert datasets.log_split_inputs(folds, [0, 2], "data/raw") == 4
        assert datasets.log_split_inputs(folds, [0, 2], "data/raw") == 0  # already logged
    inputs = _inputs(run.info.run_id)
    assert set(inputs) == {f"data/raw fold{k} {p}" for k in (0, 2) for p in ("train", "validation")}
    dataset, tags = inputs["data/raw fold2 validation"]
    assert dataset.digest == HASH and tags["mlflow.data.context"] == "validation"
    assert (tags["split"], tags["fold"], tags["repeat"], tags["part"]) == (
        "2",
        "2",
        "0",
        "validation",
    )
    assert '"num_rows": 2' in dataset.profile  # the two images of fold 2
    dataset, tags = inputs["data/raw fold0 train"]
    assert tags["mlflow.data.context"] == "training" and '"num_rows": 4' in dataset.profile
    # The rows are the manifest's: the dataset can be loaded back and says which images.
    source = mlflow.data.get_source(mlflow.get_run(run.info.run_id).inputs.dataset_inputs[0])
    assert source.to_dict() == {"uri": "data/raw"}


def test_evaluate_logs_only_the_scored_validation_parts(project):
    _, folds = project
    with mlflow.start_run() as run:
        datasets.log_split_inputs(folds, folds.ids, "data/raw", scored=True)
    inputs = _inputs(run.info.run_id)
    assert sorted(inputs) == [f"data/raw fold{k} validation" for k in range(3)]
    assert {t["mlflow.data.context"] for _, t in inputs.values()} == {"evaluation"}


def test_the_data_version_falls_back_to_dvc_lock_and_else_nothing_is_logged(project):
    root, folds = project
    (root / "data.dvc").unlink()
    assert datasets.data_version() is None
    with mlflow.start_run():
        assert datasets.log_split_inputs(folds, [0], "data/raw") == 0
    (root / "dvc.lock").write_text(
        "stages:\n  ingest:\n    deps:\n    - path: data/raw\n      md5: abc.dir\n"
    )
    assert datasets.data_version() == "abc"


def test_the_data_version_is_the_hash_of_the_folder_data_raw_names(project, tmp_path_factory):
    root, _ = project
    elsewhere = tmp_path_factory.mktemp("sfew")  # data.raw pointed outside the project
    (root / "dvc.lock").write_text(
        "stages:\n  ingest:\n    deps:\n"
        "    - path: outputs/params/data.json\n      md5: 0123\n"  # listed first, not the frames
        f"    - path: {elsewhere}\n      md5: def.dir\n"
    )
    # data.dvc tracks data/raw, not the folder the stages read: its hash would be another data's.
    assert datasets.data_version(str(elsewhere)) == "def"
    assert datasets.data_version("data/raw") == HASH
    assert datasets.data_version("data/other") is None
    # In a repro, dvc.lock holds what DVC hashed just before; data.dvc may predate an edit.
    (root / "dvc.lock").write_text(
        "stages:\n  ingest:\n    deps:\n    - path: data/raw\n      md5: 456.dir\n"
    )
    assert datasets.data_version("data/raw") == "456"
