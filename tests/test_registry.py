"""The model registry: evaluate registers the training run's logged model for the workspace's
checkpoint, with the params and metrics as tags and an alias per DVC experiment."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from emoprune.pipeline import registry


class Doubler(mlflow.pyfunc.PythonModel):
    # Hinted like the project's FoldModel: MLflow warns at class creation about an unhinted one.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return np.asarray(model_input) * 2


@pytest.fixture
def store(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = MlflowClient().create_experiment("emoprune")
    # Through the environment, undone after the test: mlflow.set_experiment would leave this
    # store's experiment id active for the next test's fresh store.
    clean_env.setenv("MLFLOW_EXPERIMENT_NAME", "emoprune")
    yield tmp_path, exp_id
    mlflow.end_run()


def _train(root, folder, name, content):
    """A training run that writes ``folder/fold0.pt`` and logs it as ``name``; its run id."""
    checkpoint = root / folder / "fold0.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(content)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name=name, python_model=Doubler())
        registry.tag_logged_model(info.model_id, checkpoint)
    return run.info.run_id


def _evaluate(exp_name, **kwargs):
    with mlflow.start_run(tags={"dvc.exp_name": exp_name, "git.commit": "c" * 40}):
        return registry.register_models({"prune.threshold": 15}, {"cnn.acc.mean": 0.6}, **kwargs)


def test_versions_come_from_the_training_runs_with_tags_and_aliases(store, capsys):
    root, _ = store
    cnn_run = _train(root, "outputs/models/cnn", "model_fold0", b"cnn weights")
    _train(root, "outputs/models/cnn", "model_fold0", b"other weights")  # a later, other run
    (root / "outputs/models/cnn/fold0.pt").write_bytes(b"cnn weights")  # DVC restored the first
    pruned_run = _train(root, "outputs/models/pruned", "shrunk_fold0", b"pruned weights")
    made = _evaluate("t15")
    assert made == [("emoprune-cnn", "1", "t15"), ("emoprune-pruned-cnn", "1", "t15")]
    client = MlflowClient()
    cnn = client.get_model_version("emoprune-cnn", "1")
    assert cnn.run_id == cnn_run  # the run that produced these weights, not the newest one
    assert client.get_model_version("emoprune-pruned-cnn", "1").run_id == pruned_run
    assert cnn.tags["param.prune.threshold"] == "15" and cnn.tags["metric.cnn.acc.mean"] == "0.6"
    assert cnn.tags["fold"] == "0" and cnn.tags["dvc.exp_name"] == "t15"
    assert cnn.tags[registry.CHECKPOINT_TAG] == registry.sha256(
        root / "outputs/models/cnn/fold0.pt"
    )
    assert client.get_registered_model("emoprune-cnn").description
    # A second pipeline run: a new version, its alias, and MLflow's own @latest move to it.
    assert _evaluate("workspace")[0] == ("emoprune-cnn", "2", "workspace")
    assert client.get_model_version_by_alias("emoprune-cnn", "t15").version == 1
    assert client.get_model_version_by_alias("emoprune-cnn", "workspace").version == 2
    model = mlflow.pyfunc.load_model("models:/emoprune-pruned-cnn@latest")
    assert model.predict(np.ones(2)).tolist() == [2.0, 2.0]


def test_a_checkpoint_no_run_logged_is_logged_again_or_skipped(store, capsys):
    root, _ = store
    _train(root, "outputs/models/cnn", "model_fold0", b"cnn weights")
    (root / "outputs/models/cnn/fold0.pt").write_bytes(b"weights from a reset store")
    assert _evaluate("workspace") == []
    assert "not registered" in capsys.readouterr().out

    def log_again(model, checkpoint, name):
        assert (model, checkpoint.name, name) == ("cnn", "fold0.pt", "model_fold0")
        return mlflow.pyfunc.log_model(name=name, python_model=Doubler()).model_id

    assert _evaluate("workspace", log_again=log_again) == [("emoprune-cnn", "1", "workspace")]
    version = MlflowClient().get_model_version("emoprune-cnn", "1")
    assert version.tags[registry.CHECKPOINT_TAG] == registry.sha256(
        root / "outputs/models/cnn/fold0.pt"
    )


@pytest.mark.parametrize(
    ("exp", "alias"),
    [("t15", "t15"), ("workspace", "workspace"), ("my exp/1", "my-exp-1"), ("latest", "exp-latest"),
     ("v2", "exp-v2"), ("", "workspace")],
)  # fmt: skip
def test_aliases_are_valid_and_never_reserved(exp, alias):
    assert registry.alias_for(exp) == alias


def test_a_real_checkpoint_is_logged_again_as_its_stage_would_and_predicts(store):
    from test_packaged import FRAMES, _cnn

    root, _ = store
    checkpoint = root / "outputs/models/cnn/fold0.pt"
    checkpoint.parent.mkdir(parents=True)
    _cnn(checkpoint)
    with mlflow.start_run(tags={"dvc.exp_name": "workspace"}):
        made = registry.register_models({}, {}, registry.log_again)
    assert made == [("emoprune-cnn", "1", "workspace")]
    model = mlflow.pyfunc.load_model("models:/emoprune-cnn@workspace")
    proba = model.predict(FRAMES)
    assert proba.shape == (len(FRAMES), 7) and np.allclose(proba.sum(axis=1), 1)
    assert model.metadata.metadata["kind"] == "cnn" and model.metadata.metadata["fold"] == 0
