import json

import pytest

from emoprune.pipeline.outputs import atomic_path, write_json, write_tsv


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"acc": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"acc": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "resize"
    out.mkdir()
    (out / "stale.npy").write_text("old")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["resize"]


def test_tsv_has_header_and_rows(tmp_path):
    write_tsv(tmp_path / "e.tsv", [{"epoch": 1, "loss": 0.123456789}, {"epoch": 2, "loss": None}])
    assert (tmp_path / "e.tsv").read_text() == "epoch\tloss\n1\t0.123457\n2\t\n"


def test_leftovers_of_a_killed_attempt_are_removed(tmp_path):
    stale_dir = tmp_path / ".cnn.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "fold0.pt").write_text("half")
    (tmp_path / ".cnn.def456.tmp").write_text("half")
    (tmp_path / ".other.x.tmp").write_text("not ours")
    with atomic_path(tmp_path / "cnn") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.x.tmp", "cnn"]
