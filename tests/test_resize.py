import numpy as np
import pytest
from PIL import Image

from emoprune.data.resize import resize_all, resize_one
from emoprune.errors import UserError


def test_sizes_dtype_and_order(tiny_sample):
    paths = sorted(tiny_sample.rglob("*.png"))[:5]
    cnn, resnet = resize_all(paths, [227, 224], progress=False)
    assert cnn.shape == (5, 227, 227, 3) and resnet.shape == (5, 224, 224, 3)
    assert cnn.dtype == np.uint8
    for i, p in enumerate(paths):  # threads must not reorder frames
        assert np.array_equal(cnn[i], resize_one(p, [227])[0])


def test_resize_matches_pillow_antialiased_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (576, 720, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    expected = np.asarray(Image.fromarray(arr).resize((227, 227), Image.Resampling.BILINEAR))
    assert np.array_equal(resize_one(tmp_path / "x.png", [227])[0], expected)


def test_grey_and_16_bit_become_rgb(tmp_path):
    Image.fromarray(np.full((40, 50), 200, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((40, 50), 51400, np.uint16)).save(tmp_path / "d.png")
    for name in ("g.png", "d.png"):
        out = resize_one(tmp_path / name, [32])[0]
        assert out.shape == (32, 32, 3)
        assert np.all(out == 200)  # 51400 >> 8 == 200


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing"):
        resize_one(tmp_path / "gone.png", [32])
