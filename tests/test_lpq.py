"""LPQ: the fast descriptor must equal the literal lpq.m port bit for bit, and behave like LPQ."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reference import lpq_reference
from emoprune.features import lpq
from emoprune.features.lpq import lpq_code_image


@pytest.mark.parametrize("win_size", [3, 5, 7])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize(
    "shape,high", [((9, 9), 4), ((23, 31), 16), ((48, 37), 256), ((64, 101), 256)]
)
def test_equals_reference_on_random_integer_images(win_size, decorrelate, shape, high):
    # Few grey levels => many responses exactly 0 in exact arithmetic, whose bit is decided by
    # rounding noise: the hardest case for bit-exactness.
    rng = np.random.default_rng(win_size * 1000 + decorrelate * 100 + shape[0])
    img = rng.integers(0, high, size=shape)
    fast = lpq(img, win_size=win_size, decorrelate=decorrelate)
    ref = lpq_reference(img, win_size=win_size, decorrelate=decorrelate)
    np.testing.assert_array_equal(fast, ref)


def test_equals_reference_on_a_face_sized_uint8_frame():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(227, 227), dtype=np.uint8)
    np.testing.assert_array_equal(lpq(img), lpq_reference(img))


def test_output_is_256_float64_summing_to_one():
    img = np.random.default_rng(0).integers(0, 256, size=(40, 50))
    h = lpq(img)
    assert h.shape == (256,) and h.dtype == np.float64
    assert h.sum() == pytest.approx(1.0, abs=1e-12)
    assert (h >= 0).all()
    # Each bin is a count over the (H-2) x (W-2) valid pixels.
    np.testing.assert_allclose(h * (38 * 48), np.round(h * (38 * 48)), atol=1e-9)


def test_code_image_has_valid_shape():
    codes = lpq_code_image(np.zeros((20, 30)) + np.arange(30), win_size=5)
    assert codes.shape == (16, 26) and codes.dtype == np.uint8


@pytest.mark.parametrize("value", [0.0, 17.0, 255.0])
def test_constant_image_gives_a_single_code(value):
    h = lpq(np.full((30, 30), value))
    assert np.count_nonzero(h) == 1
    assert h.max() == 1.0


def test_invariant_to_brightness_scaling():
    # A continuous-valued image: no response is exactly zero, so scaling cannot flip a sign.
    rng = np.random.default_rng(3)
    gray = rng.random((60, 70)) * 200
    for win_size, decorrelate in [(3, True), (5, False), (7, True)]:
        np.testing.assert_array_equal(
            lpq(gray, win_size, decorrelate), lpq(gray * 2.5, win_size, decorrelate)
        )


def test_dtype_does_not_matter():
    img = np.random.default_rng(4).integers(0, 256, size=(32, 32))
    base = lpq(img)
    for dtype in (np.uint8, np.int16, np.float32, np.float64):
        np.testing.assert_array_equal(lpq(img.astype(dtype)), base)


def test_window_size_and_decorrelation_change_the_result():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(64, 64))
    h3, h5, h7 = lpq(img, 3), lpq(img, 5), lpq(img, 7)
    assert not np.array_equal(h3, h5) and not np.array_equal(h5, h7)
    assert not np.array_equal(lpq(img, decorrelate=True), lpq(img, decorrelate=False))
    assert not np.array_equal(lpq(img, rho=0.9), lpq(img, rho=0.5))


def test_decorrelation_spreads_codes_on_smooth_images():
    # On a low-pass image the raw STFT coefficients are correlated; whitening is what makes the
    # 256 codes more evenly used (the point of decorrelate=True in the paper).
    rng = np.random.default_rng(6)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(rng.normal(size=(128, 128)), 1.5)

    def entropy(h):
        nz = h[h > 0]
        return float(-(nz * np.log2(nz)).sum())

    assert entropy(lpq(img, decorrelate=True)) > entropy(lpq(img, decorrelate=False))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gray": np.zeros((10, 10, 3))}, "2-D"),
        ({"gray": np.zeros(10)}, "2-D"),
        ({"gray": np.zeros((10, 10)), "win_size": 4}, "odd"),
        ({"gray": np.zeros((10, 10)), "win_size": 1}, "odd"),
        ({"gray": np.zeros((10, 10)), "win_size": 3.0}, "odd"),
        ({"gray": np.zeros((4, 10)), "win_size": 5}, "smaller than"),
        ({"gray": np.array([[0.0, 1, 2], [np.nan, 1, 2], [0, 1, 2]])}, "NaN"),
        ({"gray": np.full((5, 5), np.inf)}, "infinite"),
        ({"gray": np.zeros((5, 5), dtype=complex)}, "real"),
        ({"gray": np.zeros((5, 5)), "rho": 1.5}, "rho"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lpq(**kwargs)
