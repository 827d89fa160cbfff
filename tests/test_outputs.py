import json

import pytest

from emoprune.outputs import atomic_path, write_json, write_tsv


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
