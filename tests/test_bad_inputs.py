"""Bad input, end to end: the real stage scripts on crafted data, params and checkpoints.

From the issue "Reliability and use": a broken file is skipped with a warning naming it; a
structural or params mistake stops the stage with exit 2 and ONE ``error: ...`` line naming the
culprit, never a traceback, and never a half-written output.

Stage runs cost seconds each (MLflow import + store creation), so the skip cases share one ingest
run (and one resize run on its manifest), and most params cases are checked in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, subprocess_env
from emoprune.choices import EMOTIONS
from emoprune.data.ingest import Record, manifest_csv, read_manifest
from emoprune.errors import UserError
from emoprune.pipeline.params import load_params

MANIFEST = Path("outputs/ingest/manifest.csv")
REPORT = Path("reports/ingest/details.json")


# --------------------------------------------------------------------------- helpers


def write_project(
    work: Path, raw: Path | None = None, params: dict | None = None, text: str | None = None
) -> Path:
    """A project dir: params.yaml (cv.folds 2, data.raw -> ``raw``) and an empty dvc.yaml.

    dvc.yaml marks the project root, so MLflow's sqlite store lands in ``work``.
    """
    work.mkdir(parents=True, exist_ok=True)
    if text is None:
        base: dict = {"device": "cpu", "cv": {"folds": 2}}
        if raw is not None:
            base["data"] = {"raw": raw.as_posix()}
        for section, values in (params or {}).items():
            if isinstance(values, dict):
                base.setdefault(section, {}).update(values)
            else:
                base[section] = values
        text = yaml.safe_dump(base, sort_keys=False)
    (work / "params.yaml").write_text(text)
    (work / "dvc.yaml").write_text("stages: {}\n")
    return work


def run_stage(work: Path, stage: str, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        check=False,
        cwd=work,
        env=subprocess_env(),
        capture_output=True,
        timeout=timeout,
        encoding="utf-8",
        errors="replace",
    )
    assert "\ufffd" not in proc.stdout + proc.stderr, "the stage printed bytes that aren't UTF-8"
    return proc


def single_error(proc: subprocess.CompletedProcess, stage: str) -> str:
    """Exit 2, exactly one ``error: [stage] ...`` line on stderr, no traceback: that line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: [{stage}] ")
    return errors[0]


def assert_no_ingest_outputs(work: Path) -> None:
    assert not (work / MANIFEST).exists() and not (work / REPORT).exists()
    assert not (work / "outputs").exists() and not (work / "reports").exists()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(width: int, height: int, depth: int, color_type: int, scanlines: bytes) -> bytes:
    """A PNG written by hand: its IHDR says whatever we want, whatever the pixel data holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(scanlines))
        + _chunk(b"IEND", b"")
    )


def rgb16_png(width: int, height: int, value: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow can read these but not write them)."""
    row = b"\x00" + np.full((width, 3), value, dtype=">u2").tobytes()  # filter byte + pixels
    return png_bytes(width, height, 16, 2, row * height)


def make_bytes_file(folder: Path, name: bytes, data: bytes) -> bool:
    """Create ``folder/name`` with a bytes (non-UTF-8) name; False if the filesystem refuses."""
    try:
        fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


# --------------------------------------------------------------------------- skip with warning


@dataclass
class SkipRun:
    work: Path
    raw: Path
    proc: subprocess.CompletedProcess
    report: dict
    records: list[Record]
    bytes_names: bool  # could the filesystem hold non-UTF-8 names?

    @property
    def skipped(self) -> dict[str, str]:
        """{file name as shown: reason}."""
        return {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in self.report["skipped"]}

    @property
    def warnings(self) -> list[str]:
        return [
            line
            for line in (self.proc.stdout + self.proc.stderr).splitlines()
            if line.startswith("warning:")
        ]

    def record(self, name: str) -> Record:
        (match,) = [r for r in self.records if Path(r.path).name == name]
        return match


# Expected reasons of the crafted files (the non-UTF-8 and newline names are checked apart).
SKIPS = {
    "truncated.png": "unreadable (image file is truncated)",
    "zero.png": "empty file",
    "notes.png": "not an image",
    "notes.txt": "not an image file (.txt)",
    "tiny.png": "too small (1x1)",
    "bomb.png": "too large (400,000,000 pixels, over 40,000,000 pixels: decompression-bomb guard)",
    "big.png": "too large (8000x6000, over 40,000,000 pixels)",
    "loop_a.png": "symlink loop (too many levels of symbolic links)",
    "loop_b.png": "symlink loop (too many levels of symbolic links)",
    "dangling.png": "broken symlink (target gone.png not found)",
    "fifo.png": "not a regular file (a named pipe)",
    "sparse.png": "too large (600 MiB file, over 512 MiB)",
}
CONVERTED = {
    "grey.png": "converted L to RGB",
    "palette.png": "converted P to RGB",
    "grey16.png": "converted 16-bit I;16 to 8-bit RGB",
    "rgb16.png": "converted 16-bit RGB to 8-bit RGB",
}


@pytest.fixture(scope="module")
def skip_run(tiny_sample, tmp_path_factory) -> SkipRun:
    """ONE ingest run over a tree holding every skippable or convertible kind of file."""
    root = tmp_path_factory.mktemp("skips")
    raw = root / "raw"
    shutil.copytree(tiny_sample, raw)
    happy = raw / "Happy"
    source = min(happy.iterdir())
    data = source.read_bytes()
    frame = Image.open(source)

    (happy / "truncated.png").write_bytes(data[: len(data) // 2])
    (happy / "zero.png").write_bytes(b"")
    (happy / "notes.png").write_text("not a picture, just text named .png\n")
    (happy / "notes.txt").write_text("a stray note\n")
    Image.new("RGB", (1, 1)).save(happy / "tiny.png")
    # Headers that claim a huge image over a few bytes of data: nothing big is ever allocated.
    (happy / "bomb.png").write_bytes(png_bytes(20000, 20000, 8, 2, b"\x00"))  # Pillow's guard
    (happy / "big.png").write_bytes(png_bytes(8000, 6000, 8, 2, b"\x00"))  # our MAX_PIXELS
    os.symlink("loop_b.png", happy / "loop_a.png")
    os.symlink("loop_a.png", happy / "loop_b.png")
    os.symlink("gone.png", happy / "dangling.png")
    os.mkfifo(happy / "fifo.png")  # reading it would block forever
    with open(happy / "sparse.png", "wb") as f:  # 600 MiB on paper, nothing on disk
        f.truncate(600 * 2**20)
    (happy / "new\nline.png").write_text("junk")

    grey = frame.convert("L")
    grey.save(happy / "grey.png")
    frame.convert("P").save(happy / "palette.png")
    # 16-bit greyscale whose top byte is the 8-bit frame: it must convert to exactly grey.png.
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(happy / "grey16.png")
    (happy / "rgb16.png").write_bytes(rgb16_png(64, 48, 40000))

    bytes_names = make_bytes_file(happy, b"\xff\xfe.png", b"junk") and make_bytes_file(
        happy, b"caf\xe9_01_02.png", data
    )
    happy.rename(raw / "happy")  # folders match class names case-insensitively

    work = write_project(root / "work", raw, {"resize": {"cnn": 67, "resnet": 33}})
    proc = run_stage(work, "ingest")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / REPORT).read_text())
    return SkipRun(work, raw, proc, report, read_manifest(work / MANIFEST), bytes_names)


def test_skip_run_succeeds_without_traceback(skip_run):
    assert "Traceback" not in skip_run.proc.stderr
    assert not [line for line in skip_run.proc.stderr.splitlines() if line.startswith("error:")]


def test_each_broken_file_is_skipped_with_its_reason(skip_run):
    skipped = skip_run.skipped
    for name, reason in SKIPS.items():
        assert skipped.get(name) == reason, (name, skipped.get(name))
    assert skipped["new\\nline.png"] == "not an image"  # the newline is escaped: one line
    expected = len(SKIPS) + 1 + skip_run.bytes_names
    assert len(skip_run.report["skipped"]) == expected, skip_run.report["skipped"]
    assert all(
        s["path"].startswith(f"{skip_run.raw.as_posix()}/happy/")
        for s in skip_run.report["skipped"]
    )


def test_each_skip_is_one_warning_line_naming_the_file(skip_run):
    warnings = skip_run.warnings
    assert len(warnings) == len(skip_run.report["skipped"])
    for s in skip_run.report["skipped"]:
        assert f"warning: skipped {s['path']}: {s['reason']}" in warnings


def test_manifest_excludes_skipped_files(skip_run):
    names = {Path(r.path).name for r in skip_run.records}
    assert not names & set(SKIPS)
    assert len(skip_run.records) == 27 + len(CONVERTED) + skip_run.bytes_names
    assert skip_run.report["n_images"] == len(skip_run.records)
    assert skip_run.report["per_class"]["Happy"] == 4 + len(CONVERTED) + skip_run.bytes_names
    assert all(r.emotion == "Happy" for r in skip_run.records if "/happy/" in r.path)


def test_16bit_palette_and_grey_frames_are_kept_and_noted(skip_run):
    for name, note in CONVERTED.items():
        assert skip_run.record(name).checks == note
    noted = {Path(c["path"]).name: c["note"] for c in skip_run.report["converted"]}
    assert noted == CONVERTED
    assert (skip_run.record("rgb16.png").width, skip_run.record("rgb16.png").height) == (64, 48)


def test_non_utf8_names_print_on_one_line(skip_run):
    if not skip_run.bytes_names:
        pytest.skip("this filesystem refuses non-UTF-8 file names")
    assert skip_run.skipped["\\xff\\xfe.png"] == "not an image"
    assert any(line.endswith("/happy/\\xff\\xfe.png: not an image") for line in skip_run.warnings)
    kept = skip_run.record("caf\udce9_01_02.png")  # round-trips through the manifest
    assert Path(kept.path).is_file()
    assert kept.checks == "ok" and kept.emotion == "Happy"


def test_converted_frames_resize_faithfully(skip_run):
    """The next stage reads what ingest kept: 16-bit, palette and non-UTF-8 frames included."""
    proc = run_stage(skip_run.work, "resize")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((skip_run.work / "outputs/resize/meta.json").read_text())
    arrays = np.load(skip_run.work / "outputs/resize" / meta["files"]["cnn"])
    assert arrays.shape == (len(skip_run.records), 67, 67, 3)
    index = {Path(r.path).name: i for i, r in enumerate(skip_run.records)}
    grey16, grey = arrays[index["grey16.png"]], arrays[index["grey.png"]]
    assert np.array_equal(grey16, grey)  # top byte kept, not clipped at 255
    assert grey16.std() > 10  # a real frame, not a flat one
    assert np.all(arrays[index["rgb16.png"]] == 40000 >> 8)
    if skip_run.bytes_names:
        source = min((skip_run.raw / "happy").glob("*_*_*.png")).name
        assert np.array_equal(arrays[index["caf\udce9_01_02.png"]], arrays[index[source]])


# --------------------------------------------------------------------------- structural errors


def _only_broken(raw: Path) -> None:
    """Sad keeps 1 good frame (fewer than cv.folds=2) and 1 truncated one."""
    frames = sorted((raw / "Sad").iterdir())
    for p in frames[2:]:
        p.unlink()
    frames[1].write_bytes(frames[1].read_bytes()[:100])


@pytest.mark.parametrize(
    "mutate, culprit",
    [
        pytest.param(
            lambda raw: (raw / "Contempt").mkdir(),
            "/Contempt: unknown class folder "
            "(expected one of Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise)",
            id="unknown-class",
        ),
        pytest.param(
            lambda raw: [p.unlink() for p in (raw / "Fear").iterdir()],
            "/Fear: no usable images in class Fear (the folder holds no image files)",
            id="empty-class",
        ),
        pytest.param(
            _only_broken,
            "/Sad: 1 usable images in class Sad, fewer than cv.folds=2 (1 file skipped, e.g. ",
            id="fewer-than-folds",
        ),
    ],
)
def test_structural_problem_stops_ingest(tiny_sample, tmp_path, mutate, culprit):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_sample, raw)
    mutate(raw)
    work = write_project(tmp_path / "work", raw)
    line = single_error(run_stage(work, "ingest"), "ingest")
    assert f"error: [ingest] {raw.as_posix()}{culprit}" in line
    if culprit.startswith("/Sad:"):
        assert line.endswith(": unreadable (image file is truncated))")
    assert_no_ingest_outputs(work)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    "text, message",
    [
        ("cnn:\n  lr: -1\n", "params.yaml: cnn.lr must be > 0, got -1.0"),
        ("cnn:\n  batch_size: 0\n", "params.yaml: cnn.batch_size must be > 0, got 0"),
        ("prune:\n  threshold: 0\n", "params.yaml: prune.threshold must be in (0, 90), got 0.0"),
        ("prune:\n  threshold: 90\n", "params.yaml: prune.threshold must be in (0, 90), got 90.0"),
        (
            "prune:\n  threshold: wide\n",
            "params.yaml: prune.threshold must be a number, got 'wide'",
        ),
        ("prune:\n  threshold: .nan\n", "params.yaml: prune.threshold must be a number, got nan"),
        ("cnn:\n  dropout: 0.5\n", "params.yaml: unknown key cnn.dropout"),
        ("prunning:\n  threshold: 15\n", "params.yaml: unknown key prunning (did you mean prune?)"),
        (
            "prune:\n  layers: [fc9]\n",
            "params.yaml: prune.layers must be drawn from fc1, fc2, fc3, got ['fc9']",
        ),
        (
            "prune:\n  layers: fc2\n",
            "params.yaml: prune.layers must be a list of strings, got 'fc2'",
        ),
        ("cv:\n  folds: 1\n", "params.yaml: cv.folds must be >= 2, got 1"),
        ("cnn:\n", "params.yaml: cnn must be a mapping, got None"),
        ("cnn:\n  lr: 0.1\n\tepochs: 3\n", "params.yaml: invalid YAML at line 3"),
    ],
)
def test_bad_params_are_one_line_user_errors(tmp_path, text, message):
    write_project(tmp_path, text=text)
    with pytest.raises(UserError) as exc:
        load_params(tmp_path / "params.yaml")
    assert str(exc.value).endswith(message.removeprefix("params.yaml"))
    assert "\n" not in str(exc.value) and exc.value.exit_code == 2


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; what the user means is the number.
    write_project(tmp_path, text="cnn:\n  lr: 1e-4\nprune:\n  threshold: 2.5E+1\n")
    p = load_params(tmp_path / "params.yaml")
    assert p.cnn.lr == pytest.approx(1e-4) and p.prune.threshold == 25.0


@pytest.mark.parametrize(
    "stage, params, message",
    [
        (
            "ingest",
            {"prune": {"layers": ["fc9"]}},
            "params.yaml: prune.layers must be drawn from fc1, fc2, fc3, got ['fc9']",
        ),
        ("prune_cnn", {"cnn": {"lr": -1}}, "params.yaml: cnn.lr must be > 0, got -1.0"),
    ],
)
def test_bad_params_stop_a_stage_before_anything_is_written(
    tiny_sample, tmp_path, stage, params, message
):
    work = write_project(tmp_path, tiny_sample, params)
    line = single_error(run_stage(work, stage), stage)
    assert line == f"error: [{stage}] {message}"
    # Validated before tracking starts: not even the MLflow store is created.
    assert sorted(p.name for p in work.iterdir()) == ["dvc.yaml", "params.yaml"]


# --------------------------------------------------------------------------- prune_cnn's input

PRUNE_PARAMS = {
    "resize": {"cnn": 67, "resnet": 33},
    "cnn": {"epochs": 2, "checkpoint_every": 1, "batch_size": 8},
    "prune": {"start_epoch": 1},
}


def prune_project(work: Path) -> Path:
    """A minimal outputs tree for prune_cnn: manifest, 67x67 arrays, an empty models/cnn/."""
    write_project(work, params=PRUNE_PARAMS)
    rng = np.random.default_rng(0)
    records = [
        Record(
            path=f"data/raw/{c}/{c}_{i}_0.png",
            emotion=c,
            label=label,
            width=720,
            height=576,
            fold=i % 2,
            clip=f"{c}_{i}",
            sha1="0" * 40,
            checks="ok",
        )
        for label, c in enumerate(EMOTIONS)
        for i in range(2)
    ]
    (work / MANIFEST).parent.mkdir(parents=True)
    (work / MANIFEST).write_text(manifest_csv(records))
    resized = work / "outputs/resize"
    resized.mkdir(parents=True)
    np.save(resized / "cnn_67.npy", rng.integers(0, 256, (len(records), 67, 67, 3), np.uint8))
    np.save(resized / "resnet_33.npy", rng.integers(0, 256, (len(records), 33, 33, 3), np.uint8))
    (resized / "meta.json").write_text(
        json.dumps(
            {
                "n_images": len(records),
                "sizes": {"cnn": 67, "resnet": 33},
                "files": {"cnn": "cnn_67.npy", "resnet": "resnet_33.npy"},
            }
        )
    )
    (work / "outputs/models/cnn").mkdir(parents=True)
    return work


def save_real_checkpoint(path: Path) -> None:
    from emoprune.models.cnn import CNN
    from emoprune.training.checkpoints import save_cnn
    from emoprune.training.loop import adam

    model = CNN(n_classes=len(EMOTIONS), in_size=67)
    # With the training fold's normalisation, as train_cnn saves it: the logged model needs it.
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3, "classes": list(EMOTIONS)}
    save_cnn(path, model, adam(model, 0.0006), epoch=1, **norm)


def _truncated(folder: Path) -> None:
    save_real_checkpoint(folder / "fold0_epoch001.pt")  # fold 0 prunes and saves first
    save_real_checkpoint(folder / "fold1_epoch001.pt")
    data = (folder / "fold1_epoch001.pt").read_bytes()
    (folder / "fold1_epoch001.pt").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "breakage, culprit, reason",
    [
        pytest.param(lambda folder: None, "fold0_epoch001.pt", "no such file", id="missing"),
        pytest.param(
            lambda folder: (folder / "fold0_epoch001.pt").write_bytes(
                np.random.default_rng(1).bytes(4096)
            ),
            "fold0_epoch001.pt",
            "not a torch checkpoint (",
            id="random-bytes",
        ),
        pytest.param(_truncated, "fold1_epoch001.pt", "corrupt or truncated", id="truncated"),
    ],
)
def test_unusable_checkpoint_stops_prune_cnn(tmp_path, breakage, culprit, reason):
    work = prune_project(tmp_path)
    breakage(work / "outputs/models/cnn")
    proc = run_stage(work, "prune_cnn")
    line = single_error(proc, "prune_cnn")
    assert line.startswith(
        f"error: [prune_cnn] cannot load checkpoint outputs/models/cnn/{culprit}: "
    ), line
    assert reason in line
    if culprit.startswith("fold1"):
        assert "prune fold 0" in proc.stderr  # fold 0 trained and saved before fold 1 failed
    # Not even fold 0's pruned model is left behind.
    assert not (work / "outputs/models/pruned").exists()
    assert [p.name for p in (work / "outputs/models").iterdir()] == ["cnn"]
    assert not (work / "reports").exists()


def test_more_pca_components_than_a_fold_allows_stop_train_mlp_before_it_trains(tmp_path):
    # 14 frames in 2 folds: each training part has 7, fewer than the 8 components asked for.
    work = prune_project(tmp_path)
    write_project(work, params={**PRUNE_PARAMS, "mlp": {"pca_components": 8}})
    features = work / "outputs/features"
    features.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(features / "lpq.npy", rng.random((14, 256)))
    np.save(features / "phog.npy", rng.random((14, 680)))
    line = single_error(run_stage(work, "train_mlp"), "train_mlp")
    assert line == (
        "error: [train_mlp] params.yaml: mlp.pca_components must be <= 7 (lpq: 256 values per "
        "frame; the smallest training part: 7 frames), got 8"
    )
    assert sorted(p.name for p in (work / "outputs/models").iterdir()) == ["cnn"]
    assert not (work / "reports").exists()
