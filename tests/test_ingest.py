import json
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
    MANIFEST_COLUMNS,
    assign_folds,
    assign_repeated_folds,
    build_manifest,
    clip_of,
    fold_report,
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


def test_repeated_folds_are_stratified_partitions_that_differ():
    labels = np.repeat(np.arange(7), [20, 15, 20, 20, 20, 20, 20])
    folds = assign_repeated_folds(labels, None, 5, seed=3, repeats=4)
    assert folds.shape == (4, len(labels))
    # Repeat 0 is the single K-fold assignment, repeat r the one of seed + r.
    assert np.array_equal(folds[0], assign_folds(labels, None, 5, seed=3))
    assert np.array_equal(folds[2], assign_folds(labels, None, 5, seed=5))
    for r, row in enumerate(folds):
        # One fold id per image: the folds are disjoint and cover every image exactly once.
        assert set(row.tolist()) == set(range(5))
        assert sum(np.sum(row == f) for f in range(5)) == len(labels)
        for c in range(7):
            per_fold = np.bincount(row[labels == c], minlength=5)
            assert per_fold.max() - per_fold.min() <= 1, f"repeat {r}, class {c}"
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.array_equal(folds[a], folds[b]), f"repeats {a} and {b} are the same"


def test_repeated_folds_keep_clips_together_in_every_repeat():
    labels = np.repeat(np.arange(7), 12)
    groups = np.array([f"{l}/clip{i // 3}" for i, l in enumerate(labels)])
    folds = assign_repeated_folds(labels, groups, 3, seed=0, repeats=3)
    for row in folds:
        assert all(len(set(row[groups == g])) == 1 for g in set(groups))
    assert np.array_equal(folds[0], assign_folds(labels, groups, 3, seed=0))


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


def test_threads_decode_but_the_report_keeps_one_reader_order(raw_copy):
    # Skips found before reading (a text file) and by decoding (a truncated frame), in three
    # classes, come out in folder and file order whatever the number of threads.
    (raw_copy / "Angry" / "notes.txt").write_text("x")
    for emotion in ("Disgust", "Sad"):
        victim = first(raw_copy, emotion)
        victim.write_bytes(victim.read_bytes()[:100])
    one = scan(raw_copy, EMOTIONS, workers=1)
    assert [Path(s.path).parent.name for s in one[1]] == ["Angry", "Disgust", "Sad"]
    assert scan(raw_copy, EMOTIONS, workers=4) == one
    assert [r.label for r in one[0]] == sorted(r.label for r in one[0])


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


def test_a_split_folder_holding_the_class_folders_says_what_to_do(raw_copy):
    # SFEW 2.0's layout: Train/<Emotion>/ and Val/<Emotion>/ instead of <Emotion>/.
    train = raw_copy / "Train"
    train.mkdir()
    for emotion in EMOTIONS:
        (raw_copy / emotion).rename(train / emotion)
    with pytest.raises(UserError) as exc:
        build_manifest(raw_copy, EMOTIONS, folds=2, seed=0)
    assert str(exc.value) == (
        f"{raw_copy}/Train: unknown class folder (expected one of {', '.join(EMOTIONS)}); it "
        f"holds class folders itself: move them up into {raw_copy} (merge the splits) or set "
        "data.raw to it"
    )


def test_no_images_at_all(tmp_path):
    for e in EMOTIONS:
        (tmp_path / e).mkdir()
    with pytest.raises(UserError, match="no usable images"):
        build_manifest(tmp_path, EMOTIONS, folds=2, seed=0)


def test_manifest_round_trip(tiny_sample, tmp_path):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    write_text(tmp_path / "m.csv", manifest_csv(records))
    assert read_manifest(tmp_path / "m.csv") == records
    assert all(r.folds == (r.fold,) for r in records)


def manifest_before_repeats(records) -> str:
    """The manifest as ingest wrote it before cv.repeats: these nine columns, nothing more."""
    lines = [",".join(MANIFEST_COLUMNS)]
    for r in records:
        values = (r.path, r.emotion, r.label, r.width, r.height, r.fold, r.clip, r.sha1, r.checks)
        lines.append(",".join(str(v) for v in values))
    return "\n".join(lines) + "\n"


def test_one_repeat_manifest_is_byte_identical_to_before(tiny_sample):
    assert MANIFEST_COLUMNS == (
        "path",
        "emotion",
        "label",
        "width",
        "height",
        "fold",
        "clip",
        "sha1",
        "checks",
    )
    default, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    one, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=1)
    text = manifest_csv(one)
    assert text == manifest_csv(default) == manifest_before_repeats(one)
    assert text.splitlines()[0] == "path,emotion,label,width,height,fold,clip,sha1,checks"
    # The repeats=1 folds are exactly what assign_folds gave before repeats existed.
    labels = np.array([r.label for r in one])
    assert [r.fold for r in one] == assign_folds(labels, None, 2, seed=0).tolist()


def test_repeated_manifest_round_trip_and_columns(tiny_sample, tmp_path):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=3)
    one, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    assert [r.fold for r in records] == [r.fold for r in one]  # repeat 0 is unchanged
    assert all(len(r.folds) == 3 and r.folds[0] == r.fold for r in records)
    text = manifest_csv(records)
    header = text.splitlines()[0].split(",")
    assert header == [
        "path",
        "emotion",
        "label",
        "width",
        "height",
        "fold",
        "fold_r1",
        "fold_r2",
        "clip",
        "sha1",
        "checks",
    ]
    write_text(tmp_path / "m.csv", text)
    back = read_manifest(tmp_path / "m.csv")
    assert back == records
    assert [r.folds for r in back] == [r.folds for r in records]


def test_manifest_with_a_missing_repeat_column_is_a_user_error(tiny_sample, tmp_path):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=3)
    text = manifest_csv(records).replace("fold_r1,", "fold_rx,", 1)
    write_text(tmp_path / "m.csv", text)
    with pytest.raises(UserError, match="fold columns fold_r2 skip a repeat"):
        read_manifest(tmp_path / "m.csv")


def test_records_of_mixed_repeats_are_refused(tiny_sample):
    records, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=2)
    records[0].later_folds = ()
    with pytest.raises(ValueError, match="number of repeats"):
        manifest_csv(records)


def test_fold_report_per_repeat(tiny_sample):
    one, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    assert list(fold_report(one, 2)) == ["per_fold"]
    assert sum(fold_report(one, 2)["per_fold"].values()) == 27
    three, _ = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0, repeats=3)
    report = fold_report(three, 2)
    assert report["repeats"] == 3 and report["per_fold"] == fold_report(one, 2)["per_fold"]
    assert list(report["per_fold_by_repeat"]) == ["0", "1", "2"]
    for counts in report["per_fold_by_repeat"].values():
        assert list(counts) == ["0", "1"] and sum(counts.values()) == 27


def run_ingest(workdir: Path, raw: Path, folds: int = 2, repeats: int = 1):
    (workdir / "params.yaml").write_text(
        f"data:\n  raw: {raw.as_posix()}\ncv:\n  folds: {folds}\n  repeats: {repeats}\n"
    )
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
    details = json.loads((tmp_path / "reports/ingest/details.json").read_text())
    assert "per_fold_by_repeat" not in details and "repeats" not in details


def test_stage_with_repeats_writes_every_repeat(tiny_sample, tmp_path):
    proc = run_ingest(tmp_path, tiny_sample, repeats=2)
    assert proc.returncode == 0, proc.stderr
    records = read_manifest(tmp_path / "outputs/ingest/manifest.csv")
    assert len(records) == 27 and all(len(r.folds) == 2 for r in records)
    details = json.loads((tmp_path / "reports/ingest/details.json").read_text())
    assert details["repeats"] == 2 and list(details["per_fold_by_repeat"]) == ["0", "1"]
    assert details["per_fold_by_repeat"]["0"] == details["per_fold"]
    metrics = json.loads((tmp_path / "reports/ingest/metrics.json").read_text())
    assert list(metrics) == ["data"] and list(metrics["data"]) == [
        "n_images",
        "n_skipped",
        "per_class",
    ]


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
