import hashlib
import re

import numpy as np
from PIL import Image

from emoprune.choices import EMOTIONS
from emoprune.data import sample

NAME = re.compile(r"^[A-Za-z]+_\d{9}_\d{8}\.png$")


def test_layout_names_and_sizes(tiny_sample):
    folders = sorted(p.name for p in tiny_sample.iterdir() if p.is_dir())
    assert folders == sorted(EMOTIONS)
    for emotion in EMOTIONS:
        files = sorted((tiny_sample / emotion).iterdir())
        assert len(files) == (3 if emotion == "Disgust" else 4)
        for f in files:
            assert NAME.match(f.name), f.name
            with Image.open(f) as img:
                assert img.format == "PNG" and img.mode == "RGB" and img.size == (720, 576)


def test_class_counts_follow_sfew_ratio():
    counts = sample.class_counts(100)
    assert sum(counts.values()) == 675 and counts["Disgust"] == 75
    assert sample.class_counts(20)["Disgust"] == 15


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.png")):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic_bytes_and_seed_matters(tiny_sample, tmp_path):
    sample.generate(tmp_path / "again", per_class=4, seed=0, workers=1)
    assert _digest(tmp_path / "again") == _digest(tiny_sample)
    sample.generate(tmp_path / "other", per_class=4, seed=1)
    assert _digest(tmp_path / "other") != _digest(tiny_sample)


def test_frames_vary_and_classes_differ(tiny_sample):
    # Not one template: frames differ, and the face region differs between classes.
    frames = [
        np.asarray(Image.open(next(iter(sorted((tiny_sample / e).iterdir())))), dtype=float)
        for e in EMOTIONS
    ]
    diffs = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert min(diffs) > 5


def test_clips_group_consecutive_frames(tmp_path):
    sample.generate(tmp_path, per_class=8, seed=0)
    clips = {f.name.rsplit("_", 1)[0] for f in (tmp_path / "Happy").iterdir()}
    assert 2 <= len(clips) < 8  # clips of 1-4 frames


def test_cli_rejects_bad_count(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        sample.main([str(tmp_path), "--per-class", "0"])
    assert exc.value.code == 2
    assert "--per-class" in capsys.readouterr().err


def test_the_sample_says_it_is_not_sfew(tiny_sample, tmp_path):
    from emoprune.data.ingest import SAMPLE_MARKER, build_manifest, is_generated_sample

    assert (
        is_generated_sample(tiny_sample) and "Not SFEW" in (tiny_sample / SAMPLE_MARKER).read_text()
    )
    records, skipped = build_manifest(tiny_sample, EMOTIONS, folds=2, seed=0)
    assert not skipped and all(r.path.endswith(".png") for r in records)  # the marker is no frame
    real = tmp_path / "raw"
    (real / "Happy").mkdir(parents=True)
    assert not is_generated_sample(real)
