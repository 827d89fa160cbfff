import pytest

from emoprune.errors import UserError
from emoprune.params import EMOTIONS, load_params, parse_params

from conftest import REPO


def test_repo_params_load_and_hold_the_papers_defaults():
    p = load_params(REPO / "params.yaml")
    assert p == parse_params({})  # params.yaml only restates the defaults
    assert p.data.classes == EMOTIONS
    assert (p.cv.folds, p.resize.cnn, p.resize.resnet) == (5, 227, 224)


@pytest.mark.parametrize("raw, message", [
    ({"cv": {"folds": 1}}, "params.yaml: cv.folds must be >= 2, got 1"),
    ({"cv": {"folds": "five"}}, "params.yaml: cv.folds must be an integer, got 'five'"),
    ({"cv": {"folds": 2.5}}, "cv.folds must be an integer"),
    ({"cv": {"group_by": "movie"}}, "cv.group_by must be one of none, clip"),
    ({"cv": {"fold": 5}}, "params.yaml: unknown key cv.fold"),
    ({"optimiser": {}}, "params.yaml: unknown key optimiser"),
    ({"resize": {"cnn": 32}}, "resize.cnn must be >= 67"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
    ({"data": {"classes": "Happy"}}, "data.classes must be a list of strings"),
    ({"data": {"classes": ["Happy", "happy"]}}, "data.classes must list at least two distinct"),
    ({"cv": None}, "cv must be a mapping"),
    ({"seed": True}, "seed must be an integer"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_lists_become_tuples_and_values_are_typed():
    p = parse_params({"data": {"classes": ["A", "B"]}, "cv": {"folds": 3}})
    assert p.data.classes == ("A", "B") and p.cv.folds == 3


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("cv: [folds\n")
    with pytest.raises(UserError, match="invalid YAML at line"):
        load_params(tmp_path / "params.yaml")
