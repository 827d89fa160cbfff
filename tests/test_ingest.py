import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, subprocess_env
from emoprune.choices import EMOTIONS
from emoprune.data.ingest import (
    assign_folds,
    build_manifest,
    clip_of,
    manifest_csv,
    read_manifest,
    scan,
)
from emoprune.errors import UserError
from emoprune.pipeline.outputs import write_text


def first(raw: Path, emotion: str) -> Path:
    return sorted((raw / emotion).iterdir())[0]


def test_manifest_labels_follow_class_order(tiny_sample):
    records, skipped = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    assert not skipped and len(records) == 27
    assert {r.emotion: r.label for r in records} == {e: i for i, e in enumerate(EMOTIONS)}
    assert all(r.width == 720 and r.height == 576 and r.checks == "ok" for r in records)
    assert all(len(r.sha1) == 40 for r in records)


def test_folds_are_stratified_and_deterministic():
    labels = np.repeat(np.arange(7), [20, 15, 20, 20, 20, 20, 20])
    folds = assign_folds(labels, None, 5, seed=3)
    assert np.array_equal(folds, assign_folds(labels, None, 5, seed=3))
    assert not np.array_equal(folds, assign_folds(labels, None, 5, seed=4))
    for c in range(7):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1  # every class spread evenly


def test_group_by_clip_keeps_a_clip_in_one_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(7), 12)
    groups = np.array([f"{l}/clip{i // 3}" for i, l in enumerate(labels)])
    folds = assign_folds(labels, groups, 3, seed=0)
    for g in set(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds) == {0, 1, 2}
    del rng


def test_group_by_clip_keeps_a_clip_in_one_fold_across_emotion_folders(raw_copy):
    # SFEW has clips whose frames were labelled with two emotions: the clip id alone groups them.
    happy, sad = first(raw_copy, "Happy"), first(raw_copy, "Sad")
    twin = raw_copy / "Sad" / f"{clip_of(happy.name)}_99999999.png"
    twin.write_bytes(sad.read_bytes())
    for seed in range(6):
        records, _ = build_manifest(raw_copy, EMOTIONS, folds=2, seed=seed, group_by="clip")
        clip = [r for r in records if r.clip == clip_of(happy.name)]
        assert {r.emotion for r in clip} == {"Happy", "Sad"}
        assert len({r.fold for r in clip}) == 1, f"seed {seed}: the clip spans two folds"


def test_clip_of_sfew_names():
    assert clip_of("Airheads_000519240_00000005.png") == "Airheads_000519240"
    assert clip_of("Black_Swan_001_02.png") == "Black_Swan_001"


@pytest.mark.parametrize(
    "breakage, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "unreadable"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not a png"), "not an image"),
        (lambda p: Image.new("RGB", (1, 1)).save(p), "too small"),
    ],
)
def test_broken_files_are_skipped_with_a_reason(raw_copy, breakage, reason):
    victim = first(raw_copy, "Happy")
    breakage(victim)
    records, skipped = scan(raw_copy, EMOTIONS)
    assert [Path(s.path).name for s in skipped] == [victim.name]
    assert reason in skipped[0].reason
    assert len(records) == 26


def test_os_junk_is_ignored_silently(raw_copy):
    (raw_copy / "Happy" / "Thumbs.db").write_bytes(b"\0" * 10)
    (raw_copy / "Sad" / ".DS_Store").write_bytes(b"\0" * 10)
    (raw_copy / ".DS_Store").write_bytes(b"\0")
    records, skipped = scan(raw_copy, EMOTIONS)
    assert len(records) == 27 and skipped == []


def test_grey_rgba_and_palette_frames_are_noted(raw_copy):
    for emotion, mode in (("Fear", "L"), ("Sad", "RGBA"), ("Angry", "P")):
        p = first(raw_copy, emotion)
        Image.open(p).convert(mode).save(p)
    records, _ = scan(raw_copy, EMOTIONS)
    notes = {r.emotion: r.checks for r in records if r.checks != "ok"}
    assert notes == {
        "Fear": "converted L to RGB",
        "Sad": "converted RGBA to RGB",
        "Angry": "converted P to RGB",
    }


def test_class_folders_match_case_insensitively(raw_copy):
    (raw_copy / "Happy").rename(raw_copy / "happy")
    records, _ = build_manifest(raw_copy, EMOTIONS, folds=2, seed=0)
    assert Counter(r.emotion for r in records)["Happy"] == 4


@pytest.mark.parametrize(
    "mutate, culprit",
    [
        (lambda raw: (raw / "Contempt").mkdir(), "Contempt: unknown class folder"),
        (lambda raw: [p.unlink() for p in (raw / "Fear").iterdir()], "Fear: no usable images"),
        (
            lambda raw: [p.unlink() for p in sorted((raw / "Sad").iterdir())[1:]],
            "Sad: 1 usable images in class Sad, fewer than cv.folds=2",
        ),
        (lambda raw: __import__("shutil").rmtree(raw / "Neutral"), "Neutral: class folder missing"),
    ],
)
def test_structural_problems_are_user_errors(raw_copy, mutate, culprit):
    mutate(raw_copy)
    with pytest.raises(UserError) as exc:
        build_manifest(raw_copy, EMOTIONS, folds=2, seed=0)
    assert culprit in str(exc.value)
    assert "\n" not in str(exc.value)


def test_no_images_at_all(tmp_path):
    for e in EMOTIONS:
        (tmp_path / e).mkdir()
    with pytest.raises(UserError, match="no usable images"):
        build_manifest(tmp_path, EMOTIONS, folds=2, seed=0)


def test_manifest_round_trip(tiny_sample, tmp_path):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    write_text(tmp_path / "m.csv", manifest_csv(records))
    assert read_manifest(tmp_path / "m.csv") == records


def run_ingest(workdir: Path, raw: Path, folds: int = 2):
    (workdir / "params.yaml").write_text(f"data:\n  raw: {raw.as_posix()}\ncv:\n  folds: {folds}\n")
    (workdir / "dvc.yaml").write_text("stages: {}\n")
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "ingest.py")],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_writes_manifest_and_report(tiny_sample, tmp_path):
    proc = run_ingest(tmp_path, tiny_sample)
    assert proc.returncode == 0, proc.stderr
    assert len(read_manifest(tmp_path / "outputs/ingest/manifest.csv")) == 27
    assert '"n_images": 27' in (tmp_path / "reports/ingest/details.json").read_text()


def test_stage_error_is_one_line_exit_2_and_writes_nothing(raw_copy, tmp_path):
    (raw_copy / "Contempt").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    proc = run_ingest(work, raw_copy)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Contempt: unknown class folder" in errors[0]
    assert not (work / "outputs").exists() and not (work / "reports").exists()
