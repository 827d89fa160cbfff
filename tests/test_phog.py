"""PHOG: behaviour of the descriptor and agreement with the literal anna_phog.m / edge.m ports."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.reference import (
    anna_phog_reference,
    edge_canny_reference,
    rgb2gray_reference,
    synthetic_face_frame,
)
from emoprune.features import compute_descriptors, lpq, phog
from emoprune.features.phog import (
    bin_matrix,
    canny_matlab,
    phog_from_edges,
    phog_length,
    pyramid_histogram,
    rgb2gray_matlab,
)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def face_227() -> np.ndarray:
    return synthetic_face_frame(227, 227, seed=0)


def soft_edge(theta_deg: float, size: int = 96, dark_to_bright: bool = True) -> np.ndarray:
    """uint8 image with one blurred straight edge, gradient pointing at theta (x right, y down)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
    t = np.deg2rad(theta_deg)
    s = xx * np.cos(t) + yy * np.sin(t)
    img = 120 + 80 * np.tanh(s / 3.0) * (1 if dark_to_bright else -1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def level0(p: np.ndarray, bins: int = 8) -> np.ndarray:
    h = p[:bins]
    return h / h.sum()


# --------------------------------------------------------------------------- shape and norm


@pytest.mark.parametrize("bins,levels", [(8, 3), (8, 0), (4, 2), (12, 1), (1, 3), (9, 4)])
def test_dimension_formula(face_227, bins, levels):
    p = phog(face_227, bins=bins, levels=levels)
    expected = bins * sum(4**level for level in range(levels + 1))
    assert p.shape == (expected,) and p.dtype == np.float64
    assert phog_length(227, 227, bins, levels) == expected


def test_default_dimension_is_680_and_l1_normalised(face_227):
    p = phog(face_227)
    assert p.shape == (680,)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert (p >= 0).all() and np.count_nonzero(p) > 50


def test_every_level_carries_the_same_edge_mass(face_227):
    # Cells tile the same pixels at every level (minus dropped borders): sums per level agree.
    p = phog(face_227, levels=2)
    sums = [p[:8].sum(), p[8:40].sum(), p[40:168].sum()]
    assert sums[1] == pytest.approx(sums[0], rel=0.02)
    assert sums[2] == pytest.approx(sums[0], rel=0.05)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_image_without_edges_gives_zeros(value):
    p = phog(np.full((64, 80), value, dtype=np.uint8))
    assert p.shape == (680,) and not p.any()


def test_dark_frame_below_the_reference_guard_gives_zeros():
    img = np.zeros((64, 64), dtype=np.uint8)
    img[30:35, 30:34] = 5  # a faint square, sum(G) = 100: anna_phog skips edge detection
    assert not phog(img).any()
    img[30, 30] = 6  # sum = 101: edges are found again
    assert phog(img).any()


# --------------------------------------------------------------------------- orientation


def test_step_edges_360_vs_180():
    dark_bright = np.full((64, 64), 50, dtype=np.uint8)
    dark_bright[:, 32:] = 200
    bright_dark = dark_bright[:, ::-1].copy()
    # 360: gradient along +x -> atan2 = 0 -> A = 180 -> bin 4; along -x -> A = 360 -> bin 8.
    h1, h2 = level0(phog(dark_bright)), level0(phog(bright_dark))
    assert h1[3] == pytest.approx(1.0) and h2[7] == pytest.approx(1.0)
    # 180: both are atan(0) = 0 -> A = 90 -> bin 4 of 22.5 degrees.
    g1, g2 = level0(phog(dark_bright, angle=180)), level0(phog(bright_dark, angle=180))
    np.testing.assert_array_equal(g1, g2)
    assert g1[3] == pytest.approx(1.0)


def test_horizontal_edges_use_the_reference_1e5_quirk():
    # gx == 0 is replaced by 1e-5 before atan2: -y gradients land just above 90 deg (bin 3), not
    # exactly on the 90 deg boundary (bin 2).
    top_bright = np.full((64, 64), 200, dtype=np.uint8)
    top_bright[32:] = 50
    assert level0(phog(top_bright))[2] == pytest.approx(1.0)
    assert level0(phog(top_bright[::-1].copy()))[5] == pytest.approx(1.0)


def test_orientation_exactly_zero_does_not_vote_like_the_reference():
    # anna_BinMatrix's `if b==0, bin=1; end` leaves b = 0, so A == 0 (atan2(-0.0, gx<0) = -pi)
    # votes nowhere. -0.0 neighbours above/below make GY = -0.0 at the centre pixel.
    gray = np.zeros((3, 3))
    gray[1, 0] = 200.0  # GX = -100 at the centre
    gray[2, 1] = -0.0
    edges = np.zeros((3, 3), dtype=bool)
    edges[1, 1] = True
    bh, bv = bin_matrix(gray, edges)
    assert bh[1, 1] == 0 and bv[1, 1] == 100.0
    p = phog_from_edges(gray, edges, levels=0)
    assert not p.any()
    np.testing.assert_array_equal(p, anna_phog_reference(gray, 8, 360, 0, edges=edges))


@pytest.mark.parametrize("j", range(8))
def test_oriented_edge_votes_in_expected_bin_360(j):
    theta = -180 + 22.5 + 45 * j  # centre of bin j+1 (A = theta + 180)
    h = level0(phog(soft_edge(theta)))
    assert np.argmax(h) == j
    assert h[j] > 0.9


@pytest.mark.parametrize("j", range(8))
def test_oriented_edge_votes_in_expected_bin_180(j):
    theta = -90 + 11.25 + 22.5 * j  # centre of bin j+1 (A = atan(tan(theta)) + 90)
    h = level0(phog(soft_edge(theta), angle=180))
    h_flipped = level0(phog(soft_edge(theta, dark_to_bright=False), angle=180))
    assert np.argmax(h) == j and h[j] > 0.9
    assert np.argmax(h_flipped) == j  # 180 mode ignores the sign of the gradient


def test_rgb_and_its_matlab_grey_give_the_same_phog(face_227):
    np.testing.assert_array_equal(phog(face_227), phog(rgb2gray_matlab(face_227)))


def test_rgb2gray_matches_matlab_rounding():
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 1, 1], [255, 255, 255]]], dtype=np.uint8
    )
    # 76.228..., 149.696..., 29.075..., 1.0, 255.0
    np.testing.assert_array_equal(rgb2gray_matlab(rgb), [[76, 150, 29, 1, 255]])
    rand = np.random.default_rng(0).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb2gray_matlab(rand), rgb2gray_reference(rand))
    assert rgb2gray_matlab(rand.astype(float) / 255).dtype == np.float64


# --------------------------------------------------------------------------- pyramid layout


def test_cells_leave_out_the_reference_border():
    # 230 columns: level 1 cells are 115 wide (cover all 230), level 2 57 (cover 228), level 3
    # 28 (cover 224). Edge pixels in columns 228-229 count at levels 0 and 1 only.
    gray = np.tile(np.arange(230, dtype=np.float64), (64, 1))  # gradient +x everywhere
    edges = np.zeros(gray.shape, dtype=bool)
    edges[10:20, 228:230] = True
    p = phog_from_edges(gray, edges, levels=3)
    assert p[:8].sum() == pytest.approx(p.sum() / 2)  # level 0 and level 1 only
    assert p[8:40].sum() == pytest.approx(p[:8].sum())
    assert not p[40:].any()


def test_cells_are_column_major():
    gray = np.tile(np.arange(64, dtype=np.float64), (64, 1))
    edges = np.zeros(gray.shape, dtype=bool)
    edges[40:44, 5:8] = True  # bottom-left quadrant: 2nd cell in column-major order
    p = phog_from_edges(gray, edges, levels=1)
    level1 = p[8:].reshape(4, 8).sum(axis=1)
    assert np.argmax(level1) == 1 and level1[1] == pytest.approx(level1.sum())


def test_small_frames_get_the_reference_extra_cells():
    # W = 22, l = 3: x = fix(22/8) = 2 and the loop fits 11 columns of cells (as anna_phog.m).
    assert phog_length(22, 22, 8, 3) == 8 * (1 + 4 + 16 + 11 * 11)
    img = synthetic_face_frame(22, 22, seed=3)
    p = phog(img)
    assert p.shape == (phog_length(22, 22),)
    np.testing.assert_allclose(p, anna_phog_reference(img), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- vs the reference


@pytest.mark.parametrize("angle", [360, 180])
@pytest.mark.parametrize(
    "shape,levels,bins", [((227, 227), 3, 8), ((61, 75), 2, 9), ((48, 100), 3, 4)]
)
def test_binning_equals_reference_on_a_shared_edge_map(angle, shape, levels, bins):
    rng = np.random.default_rng(shape[0] + angle + bins)
    gray = ndimage.gaussian_filter(rng.normal(120, 40, shape), 1.0)
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    gray[:, : shape[1] // 3] = 90  # flat area: gradient exactly 0 -> no vote
    edges = rng.random(shape) < 0.3  # includes border pixels (one-sided differences)
    p_ref, bh_ref, bv_ref = anna_phog_reference(
        gray, bins, angle, levels, edges=edges, return_bins=True
    )
    bh, bv = bin_matrix(gray, edges, bins, angle)
    np.testing.assert_array_equal(bh, bh_ref)
    np.testing.assert_array_equal(bv, bv_ref)
    p = phog_from_edges(gray, edges, bins, angle, levels)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        pyramid_histogram(bh_ref.astype(int), bv_ref, bins, levels), p_ref, rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("shape,seed", [((227, 227), 0), ((227, 227), 1), ((576, 720), 2)])
def test_end_to_end_matches_reference_with_its_own_canny(shape, seed):
    img = synthetic_face_frame(*shape, seed=seed)
    gray = rgb2gray_matlab(img)
    # The vectorised Canny is an exact port: identical edge maps, hence (near) identical PHOGs.
    edges = canny_matlab(gray)
    assert 0.01 < edges.mean() < 0.15
    np.testing.assert_array_equal(edges, edge_canny_reference(gray))
    p, p_ref = phog(img), anna_phog_reference(img)
    assert cosine(p, p_ref) >= 0.995
    np.testing.assert_allclose(p, p_ref, rtol=1e-9, atol=1e-15)


def test_canny_on_float_input_matches_reference():
    gray = rgb2gray_matlab(synthetic_face_frame(80, 96, seed=5).astype(np.float64) / 255)
    np.testing.assert_array_equal(canny_matlab(gray), edge_canny_reference(gray))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "image,kwargs,match",
    [
        (np.zeros(64), {}, "ndim"),
        (np.zeros((2, 64, 64, 3)), {}, "ndim"),
        (np.zeros((64, 64, 4)), {}, "3 colour channels"),
        (np.zeros((64, 64, 1)), {}, "3 colour channels"),
        (np.zeros((64, 64)), {"bins": 0}, "bins"),
        (np.zeros((64, 64)), {"bins": 2.5}, "bins"),
        (np.zeros((64, 64)), {"angle": 90}, "angle"),
        (np.zeros((64, 64)), {"levels": -1}, "levels"),
        (np.full((64, 64), np.nan), {}, "NaN"),
        (np.zeros((6, 64)), {"levels": 3}, "too small"),
        (np.zeros((64, 64), dtype=complex), {}, "real"),
    ],
)
def test_bad_input_raises_value_error(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        phog(image, **kwargs)


# --------------------------------------------------------------------------- compute_descriptors


def test_compute_descriptors_matches_per_frame_calls():
    frames = np.stack([synthetic_face_frame(64, 72, seed=s) for s in range(3)])
    lpq_x, phog_x = compute_descriptors(
        frames, lpq_kwargs={"win_size": 5}, phog_kwargs={"bins": 4, "levels": 2}
    )
    assert lpq_x.shape == (3, 256) and phog_x.shape == (3, 4 * 21)
    assert lpq_x.dtype == phog_x.dtype == np.float64
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(lpq_x[i], lpq(rgb2gray_matlab(frame), win_size=5))
        np.testing.assert_array_equal(phog_x[i], phog(frame, bins=4, levels=2))


def test_compute_descriptors_progress_and_bad_input(capsys):
    frames = np.stack([synthetic_face_frame(32, 32, seed=s) for s in range(2)])
    lpq_x, phog_x = compute_descriptors(frames, progress=True)
    assert lpq_x.shape == (2, 256) and phog_x.shape == (2, 680)
    assert "features" in capsys.readouterr().err
    with pytest.raises(ValueError, match="uint8"):
        compute_descriptors(frames.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        compute_descriptors(frames[..., 0])
