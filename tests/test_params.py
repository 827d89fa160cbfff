import re
import shutil

import pytest

from conftest import REPO
from emoprune.choices import EMOTIONS
from emoprune.errors import UserError
from emoprune.pipeline.params import load_params, parse_params
from tinyrepo import commit, run


def test_repo_params_load_and_hold_the_papers_defaults():
    p = load_params(REPO / "params.yaml")
    assert p == parse_params({})  # params.yaml only restates the defaults
    assert p.data.classes == EMOTIONS
    assert (p.cv.folds, p.resize.cnn, p.resize.resnet) == (5, 227, 224)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"cv": {"folds": 1}}, "params.yaml: cv.folds must be >= 2, got 1"),
        ({"cv": {"folds": "five"}}, "params.yaml: cv.folds must be an integer, got 'five'"),
        ({"cv": {"folds": 2.5}}, "cv.folds must be an integer"),
        ({"cv": {"group_by": "movie"}}, "cv.group_by must be one of none, clip"),
        ({"cv": {"fold": 5}}, "params.yaml: unknown key cv.fold"),
        ({"cv": {"repeats": 0}}, "params.yaml: cv.repeats must be >= 1, got 0"),
        ({"cv": {"repeats": "abc"}}, "params.yaml: cv.repeats must be an integer, got 'abc'"),
        ({"cv": {"repeats": 1.5}}, "params.yaml: cv.repeats must be an integer, got 1.5"),
        ({"cv": {"repeats": True}}, "params.yaml: cv.repeats must be an integer, got True"),
        ({"cv": {"repeat": 2}}, "params.yaml: unknown key cv.repeat (did you mean repeats?)"),
        ({"optimiser": {}}, "params.yaml: unknown key optimiser"),
        ({"resize": {"cnn": 32}}, "resize.cnn must be >= 67"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
        ({"data": {"classes": "Happy"}}, "data.classes must be a list of strings"),
        ({"data": {"classes": ["Happy", "happy"]}}, "data.classes must list at least two distinct"),
        ({"cv": None}, "cv must be a mapping"),
        ({"seed": True}, "seed must be an integer"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cv_repeats_default_and_splits():
    assert parse_params({}).cv.repeats == 1
    cv = parse_params({"cv": {"folds": 3, "repeats": 4}}).cv
    assert (cv.repeats, cv.n_splits) == (4, 12)


@pytest.mark.parametrize(
    "cv, most, message",
    [
        ({"folds": 5}, 5, "params.yaml: finetune.folds must be 'all' or <= cv.folds (5), got 6"),
        (
            {"folds": 5, "repeats": 2},
            10,
            "params.yaml: finetune.folds must be 'all' or <= cv.folds * cv.repeats (10), got 11",
        ),
    ],
)
def test_finetune_folds_count_every_split(cv, most, message):
    # With repeats there are R * K splits, and finetune.folds may take any of them.
    assert parse_params({"cv": cv, "finetune": {"folds": most}}).finetune.folds == most
    with pytest.raises(UserError) as exc:
        parse_params({"cv": cv, "finetune": {"folds": most + 1}})
    assert str(exc.value) == message


def test_lists_become_tuples_and_values_are_typed():
    p = parse_params({"data": {"classes": ["A", "B"]}, "cv": {"folds": 3}})
    assert p.data.classes == ("A", "B") and p.cv.folds == 3


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("cv: [folds\n")
    with pytest.raises(UserError, match="invalid YAML at line"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"cnn": {"lr": -0.1}}, "cnn.lr must be > 0, got -0.1"),
        ({"cnn": {"batch_size": 0}}, "cnn.batch_size must be > 0, got 0"),
        ({"prune": {"threshold": 0}}, "prune.threshold must be in (0, 90), got 0.0"),
        ({"prune": {"threshold": 90}}, "prune.threshold must be in (0, 90), got 90.0"),
        ({"prune": {"threshold": "wide"}}, "prune.threshold must be a number, got 'wide'"),
        ({"prune": {"layers": ["fc9"]}}, "prune.layers must be drawn from fc1, fc2, fc3"),
        ({"prune": {"layers": []}}, "prune.layers must list at least one"),
        ({"prune": {"mode": "cosine"}}, "prune.mode must be one of output_weights"),
        ({"prune": {"start_epoch": 50}}, "prune.start_epoch must be < cnn.epochs (50), got 50"),
        (
            {"prune": {"start_epoch": 15}},
            "prune.start_epoch must be a multiple of cnn.checkpoint_every",
        ),
        (
            {"prune": {"start_epoch": 40, "every": 11}},
            "prune.every must be <= cnn.epochs - prune.start_epoch (10) for a distinctiveness"
            " check to run, got 11",
        ),
        (
            {"prune": {"layers": ["fc1", "fc1"]}},
            "prune.layers must name each one once, got ['fc1', 'fc1']",
        ),
        (
            {"prune": {"baselines": ["random", "random"]}},
            "prune.baselines must name each one once, got ['random', 'random']",
        ),
        (
            {"finetune": {"archs": ["resnet18", "resnet18"]}},
            "finetune.archs must name each one once, got ['resnet18', 'resnet18']",
        ),
        ({"resize": {"resnet": 32}}, "resize.resnet must be >= 33, got 32"),
        (
            {"mlp": {"pca_components": 257}},
            "mlp.pca_components must be <= 256, the length of the LPQ descriptor, got 257",
        ),
        (
            {"mlp": {"pca_components": 9}, "features": {"phog_levels": 0}},
            "mlp.pca_components must be <= 8, the length of the PHOG descriptor, got 9",
        ),
        ({"features": {"lpq_win_size": 4}}, "features.lpq_win_size must be odd and >= 3"),
        ({"features": {"phog_angle": 90}}, "features.phog_angle must be 180 or 360"),
        ({"mlp": {"hidden": [0]}}, "mlp.hidden must list positive widths"),
    ],
)
def test_training_params_are_validated(raw, message):
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    assert message in str(exc.value)


def test_a_single_check_at_the_last_epoch_is_enough():
    p = parse_params({"prune": {"start_epoch": 40, "every": 10}})  # checks at epoch 50 only
    assert (p.prune.start_epoch, p.prune.every, p.cnn.epochs) == (40, 10, 50)


def test_paper_values_are_the_defaults():
    p = parse_params({})
    assert (p.cnn.lr, p.cnn.batch_size, p.cnn.epochs) == (0.0006, 32, 50)
    assert (p.prune.threshold, p.prune.layers, p.prune.mode) == (25.0, ("fc1",), "output_weights")
    assert (p.mlp.pca_components, p.mlp.epochs) == (5, 450)
    assert (p.features.phog_bins, p.features.phog_angle, p.features.phog_levels) == (8, 360, 3)


def test_the_default_cnn_is_the_regime_that_reproduces_the_paper():
    # Conv ReLU (He) + FC sigmoid (torch's default init): docs/paper.md, "The regime".
    c = parse_params({}).cnn
    assert (c.conv_activation, c.conv_init, c.fc_activation, c.fc_init) == (
        "relu",
        "he",
        "sigmoid",
        "pytorch",
    )
    old = parse_params(
        {"cnn": {"conv_activation": "sigmoid", "conv_init": "glorot", "fc_init": "glorot"}}
    ).cnn
    assert (old.conv_activation, old.fc_activation, old.conv_init, old.fc_init) == (
        "sigmoid",
        "sigmoid",
        "glorot",
        "glorot",
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"cnn": {"conv_activation": "gelu"}},
            "cnn.conv_activation must be one of sigmoid, relu, tanh",
        ),
        (
            {"cnn": {"fc_init": "xavier"}},
            "cnn.fc_init must be one of pytorch, he, glorot, got 'xavier'",
        ),
        (
            {"cnn": {"activation": "relu"}},
            "unknown key cnn.activation (did you mean fc_activation or conv_activation?)",
        ),
        ({"cnn": {"init": "glorot"}}, "unknown key cnn.init (did you mean "),
    ],
)
def test_cnn_activation_and_init_params(raw, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_params(raw)


@pytest.mark.parametrize("bins, levels", [(8, 3), (4, 1), (9, 2)])
def test_descriptor_lengths_are_the_descriptors(bins, levels):
    import numpy as np

    from emoprune.features import compute_descriptors
    from emoprune.pipeline.params import descriptor_lengths

    features = parse_params({"features": {"phog_bins": bins, "phog_levels": levels}}).features
    frames = np.random.default_rng(0).integers(0, 256, (1, 227, 227, 3), np.uint8)
    lpq, phog = compute_descriptors(frames, phog_kwargs={"bins": bins, "levels": levels})
    assert descriptor_lengths(features) == {"lpq": lpq.shape[1], "phog": phog.shape[1]}


DATA_FOLDER_CASES = [
    # (where the stage runs, data.raw, the message's reason)
    ("project", "data/raw", "data/raw not found (put SFEW there or run `make sample`)"),
    ("project", "./data/raw", "./data/raw not found (put SFEW there or run `make sample`)"),
    ("project", "sfew", "sfew not found (put SFEW there or set data.raw to where it is)"),
    (
        "project/.dvc/tmp/exps/standalone/tmpab12",
        "sfew",
        "sfew not found (`dvc exp run --temp/--queue` runs in a copy holding only what git and "
        "DVC track: set data.raw to an absolute path)",
    ),
    ("project", "{tmp}/elsewhere", "elsewhere not found (put SFEW there or set data.raw to"),
]


@pytest.mark.parametrize("where, raw, message", DATA_FOLDER_CASES)
def test_a_missing_data_folder_names_data_raw_and_why(tmp_path, where, raw, message):
    from emoprune.pipeline.params import check_data_folder

    cwd = tmp_path / where
    cwd.mkdir(parents=True)
    raw = raw.format(tmp=tmp_path)
    with pytest.raises(UserError) as err:
        check_data_folder(raw, cwd)
    assert str(err.value).startswith(f"params.yaml: data.raw: {raw} ")
    assert message in str(err.value)


def test_an_absolute_data_raw_in_an_experiment_copy_is_not_told_to_be_absolute(tmp_path):
    from emoprune.pipeline.params import check_data_folder

    cwd = tmp_path / ".dvc" / "tmp" / "exps" / "tmp1"
    cwd.mkdir(parents=True)
    with pytest.raises(UserError, match=r"not found \(put SFEW there or set data.raw"):
        check_data_folder(str(tmp_path / "gone"), cwd)


def test_a_data_folder_that_exists_passes_and_a_file_does_not(tmp_path):
    from emoprune.pipeline.params import check_data_folder

    (tmp_path / "data" / "raw").mkdir(parents=True)
    check_data_folder("data/raw", tmp_path)
    check_data_folder(str(tmp_path / "data" / "raw"), tmp_path / "elsewhere")
    (tmp_path / "frames.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"data.raw: frames.zip is not a folder \(put SFEW"):
        check_data_folder("frames.zip", tmp_path)


def test_dvc_exp_run_set_param_changes_only_the_line_it_sets(tmp_path):
    """`dvc exp run -S` writes params.yaml back with every list rewritten: written as flow lists
    they came back in block style with their comments moved, and a list that ended a section took
    the blank line after it along. The repo's file is written so that only the value set changes."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  noop:\n    cmd: python -c pass\n    params: [prune.threshold, cv.folds]\n"
    )
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    commit(tmp_path, "params")
    run(tmp_path, "dvc", "exp", "run", "-q", "-S", "prune.threshold=15", "-S", "cv.folds=3")
    before = (REPO / "params.yaml").read_text().splitlines()
    after = (tmp_path / "params.yaml").read_text().splitlines()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed == [
        ("  folds: 5", "  folds: 3"),
        (
            "  threshold: 25   # degrees: similar below it, complementary above 180 - it",
            "  threshold: 15   # degrees: similar below it, complementary above 180 - it",
        ),
    ]
