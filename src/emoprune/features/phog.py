"""Pyramid Histogram of Oriented Gradients (PHOG), a vectorised port of VGG's ``anna_phog.m``.

Reproduces ``anna_phog.m`` / ``anna_BinMatrix.m`` / ``anna_phogDescriptor.m`` (Bosch, Zisserman &
Munoz 2007) over the whole image (roi = full frame):

1. RGB -> grey with MATLAB's ``rgb2gray`` weights (0.298936021293775, 0.587043074451121,
   0.114020904255103); uint8 input is rounded (half away from zero) back to uint8 as MATLAB does.
2. If ``sum(G) <= 100`` the descriptor is all zeros (the reference's guard for black frames).
3. Edges ``E = edge(G, 'canny')``: see "Canny" below.
4. Gradients by central differences, ``[GX, GY] = gradient(double(G))`` (``np.gradient``), magnitude
   ``sqrt(GX^2 + GY^2)``; then ``GX(GX == 0) = 1e-5`` *before* the orientation, as the reference
   does (it moves horizontal edges off the bin boundaries), and orientation in degrees
   ``((atan2(GY, GX) + pi)*180)/pi`` for ``angle=360`` or ``((atan(GY./GX) + pi/2)*180)/pi`` for
   ``angle=180``.
5. Every edge pixel with positive magnitude votes its magnitude into bin ``ceil(A/(angle/bins))``.
   The reference's ``if b==0, bin=1; end`` is a typo that leaves ``b = 0``, so such pixels (A == 0
   exactly; practically unreachable) vote nowhere; reproduced.
6. Pyramid levels 0..L: at level l the cells are ``y = fix(H/2^l)`` by ``x = fix(W/2^l)`` pixels,
   stepped from the top-left while a whole cell fits, so the last ``H mod y`` rows and ``W mod x``
   columns are left out. Cells are ordered column-major (the reference's outer loop is over x).
   Per cell a ``bins``-histogram; levels concatenated 0, 1, ...; one global L1 normalisation when
   the sum is non-zero. For sides >= 4**L there are exactly 2^l x 2^l cells, giving
   ``bins * sum(4**l)`` values (680 for 8 bins, L=3). Smaller frames get the reference's extra
   cells (e.g. W=22, l=3: x=2, 11 columns of cells), so their length differs; see ``phog_length``.

Canny
-----
Not scikit-image's canny (Gaussian + Sobel, different non-maximum suppression): a vectorised port
of MATLAB's ``edge(G, 'canny')`` as in Image Processing Toolbox R2011a+ (the non-``canny_old``
path), so the edge map matches the loop-level port in :mod:`benchmarks.reference` exactly:

- integer input is scaled by ``im2single`` (float32, /255 for uint8); float input is used as is;
- sigma = sqrt(2): 1-D Gaussian on x = -ceil(4*sigma)..ceil(4*sigma) (13 taps) normalised to sum 1,
  its derivative ``gradient(g)`` with positive and negative parts each normalised to +-1, applied
  separably as a *convolution* with replicated borders (``scipy.ndimage.convolve1d``, mode
  'nearest'): dx = deriv_x(gauss_y(I)), dy = deriv_y(gauss_x(I));
- magnitude ``hypot(dx, dy)`` divided by its maximum;
- thresholds: ``high = k/64`` with k the first bin of the 64-bin ``imhist`` of the normalised
  magnitude whose cumulative count exceeds ``0.7*H*W`` (PercentOfPixelsNotEdges = 0.7), and
  ``low = 0.4*high`` (ThresholdRatio); compared in the image's precision (float32 for uint8);
- non-maximum suppression as ``cannyFindLocalMaxima``: 4 direction sectors, linear interpolation
  of the two neighbours along the gradient, interior pixels only, kept if >= both and > low;
- hysteresis as ``bwselect(weak, strong, 8)``: 8-connected weak components touching a pixel > high.
No ``bwmorph(..., 'thin')`` (that belonged to pre-R2011a ``edge``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = [
    "phog",
    "phog_from_edges",
    "phog_length",
    "rgb2gray_matlab",
    "canny_matlab",
    "canny_thresholds",
    "bin_matrix",
    "pyramid_histogram",
]

RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
PERCENT_NOT_EDGES = 0.7
THRESHOLD_RATIO = 0.4
CANNY_SIGMA = math.sqrt(2.0)
_EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- input handling


def _check_params(bins: int, angle: int, levels: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    if angle not in (180, 360):
        raise ValueError(f"angle must be 180 or 360, got {angle!r}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 0:
        raise ValueError(f"levels must be an integer >= 0, got {levels!r}")


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's round: halves away from zero (numpy's round is half-to-even).

    ``floor(|x| + 0.5)`` would round 0.49999999999999994 up, hence the explicit remainder test.
    """
    mag = np.abs(x)
    floor = np.floor(mag)
    return np.copysign(floor + (mag - floor >= 0.5), x)


def rgb2gray_matlab(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` (H, W, 3) -> (H, W); a 2-D image is returned unchanged.

    Integer input gives the same integer dtype, rounded half away from zero and clipped to the
    dtype's range (as MATLAB does for uint8/uint16); float input gives float64, unrounded.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be HxW grey or HxWx3 RGB, got shape {arr.shape}")
    c1, c2, c3 = RGB2GRAY_WEIGHTS
    rgb = arr.astype(np.float64)
    gray = rgb[..., 0] * c1 + rgb[..., 1] * c2 + rgb[..., 2] * c3
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        return np.clip(_round_half_away(gray), info.min, info.max).astype(arr.dtype)
    return gray


def validate_image(image: np.ndarray, levels: int = 0) -> np.ndarray:
    """Check a PHOG input (H, W) or (H, W, 3) and return its MATLAB grey image (H, W)."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be HxW grey or HxWx3 RGB, got ndim={arr.ndim}")
    if arr.ndim == 3 and arr.shape[2] != 3:
        raise ValueError(f"image must have 3 colour channels, got shape {arr.shape}")
    if arr.dtype.kind not in "buif":
        raise ValueError(f"image must have a real numeric dtype, got {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    min_side = max(2, 2**levels)
    if min(arr.shape[:2]) < min_side:
        # The reference's cell loop never ends when a cell is 0 pixels wide.
        raise ValueError(
            f"image of size {arr.shape[0]}x{arr.shape[1]} is too small for {levels} pyramid "
            f"levels (each side must be >= {min_side})"
        )
    gray = rgb2gray_matlab(arr)
    if gray.dtype == bool:
        gray = gray.astype(np.uint8)
    return gray


# --------------------------------------------------------------------------- Canny


def _im2single(gray: np.ndarray) -> np.ndarray:
    """MATLAB ``edge`` converts non-float input with ``im2single``; floats are kept."""
    if gray.dtype.kind in "ui":
        info = np.iinfo(gray.dtype)
        scaled = (gray.astype(np.float64) - info.min) / (float(info.max) - info.min)
        return scaled.astype(np.float32)
    if gray.dtype == np.float32:
        return gray
    return gray.astype(np.float64)


@lru_cache(maxsize=8)
def _dog_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """edge.m's smoothGradient kernels: Gaussian and its derivative, each (2*ceil(4*sigma)+1,)."""
    extent = math.ceil(4 * sigma)
    x = np.arange(-extent, extent + 1, dtype=np.float64)
    c = 1 / (math.sqrt(2 * math.pi) * sigma)
    gauss = c * np.exp(-(x**2) / (2 * sigma**2))
    gauss = gauss / np.sum(gauss)
    deriv = np.gradient(gauss)
    pos, neg = deriv > 0, deriv < 0
    deriv[pos] = deriv[pos] / np.sum(deriv[pos])
    deriv[neg] = deriv[neg] / abs(np.sum(deriv[neg]))
    gauss.setflags(write=False)
    deriv.setflags(write=False)
    return gauss, deriv


def smooth_gradient(img: np.ndarray, sigma: float = CANNY_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """edge.m's smoothGradient: (dx, dy), each shaped like ``img`` (H, W) and of its dtype."""
    gauss, deriv = _dog_kernels(float(sigma))
    # imfilter(..., 'conv', 'replicate') == convolve1d(mode='nearest'); axis 0 is MATLAB's column.
    dx = ndimage.convolve1d(
        ndimage.convolve1d(img, gauss, axis=0, mode="nearest"), deriv, axis=1, mode="nearest"
    )
    dy = ndimage.convolve1d(
        ndimage.convolve1d(img, gauss, axis=1, mode="nearest"), deriv, axis=0, mode="nearest"
    )
    return dx, dy


def canny_thresholds(mag: np.ndarray) -> tuple[float, float]:
    """edge.m's automatic (low, high) for a max-normalised magnitude ``mag`` (H, W) in [0, 1].

    ``high = k/64`` for the first 1-based bin k of ``imhist(mag, 64)`` whose cumulative count
    exceeds ``0.7*H*W``; ``low = 0.4*high``.
    """
    m, n = mag.shape
    # imhist on floats: bin = floor(x*(64-1) + 0.5), clipped to the 64 bins.
    idx = np.clip(np.floor(mag.astype(np.float64) * 63 + 0.5), 0, 63).astype(np.intp)
    counts = np.bincount(idx.ravel(), minlength=64)
    k = int(np.argmax(np.cumsum(counts) > PERCENT_NOT_EDGES * m * n)) + 1
    high = k / 64
    return THRESHOLD_RATIO * high, high


def _nms_weak(dx: np.ndarray, dy: np.ndarray, mag: np.ndarray, low) -> np.ndarray:
    """cannyFindLocalMaxima over the 4 direction sectors, OR-ed: local maxima > low, (H, W) bool."""
    weak = np.zeros(mag.shape, dtype=bool)
    if min(mag.shape) < 3:
        return weak  # no interior pixels
    ix, iy = dx[1:-1, 1:-1], dy[1:-1, 1:-1]
    c = mag[1:-1, 1:-1]
    # Neighbours of each interior pixel (row r, column q); MATLAB's idx+m is column q+1.
    e, w = mag[1:-1, 2:], mag[1:-1, :-2]
    n_, s = mag[:-2, 1:-1], mag[2:, 1:-1]
    ne, sw = mag[:-2, 2:], mag[2:, :-2]
    nw, se = mag[:-2, :-2], mag[2:, 2:]
    sectors = (
        ((iy <= 0) & (ix > -iy)) | ((iy >= 0) & (ix < -iy)),
        ((ix > 0) & (-iy >= ix)) | ((ix < 0) & (-iy <= ix)),
        ((ix <= 0) & (ix > iy)) | ((ix >= 0) & (ix < iy)),
        ((iy < 0) & (ix <= iy)) | ((iy > 0) & (ix >= iy)),
    )
    neighbours = ((e, ne, w, sw), (n_, ne, s, sw), (n_, nw, s, se), (w, nw, e, se))
    above_low = c > low
    inner = weak[1:-1, 1:-1]
    one = mag.dtype.type(1)
    # d is inf/nan only outside its own sector (where ix or iy is 0); those entries are masked.
    with np.errstate(divide="ignore", invalid="ignore"):
        d_yx = np.abs(iy / ix)  # sectors 1 and 4
        d_xy = np.abs(ix / iy)  # sectors 2 and 3
        for sector, (a1, b1, a2, b2), d in zip(
            sectors, neighbours, (d_yx, d_xy, d_xy, d_yx), strict=True
        ):
            one_minus_d = one - d
            g1 = a1 * one_minus_d + b1 * d
            g2 = a2 * one_minus_d + b2 * d
            inner |= sector & (c >= g1) & (c >= g2) & above_low
    return weak


def canny_matlab(gray: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """MATLAB ``edge(gray, 'canny')`` (R2011a+ algorithm, automatic thresholds): bool (H, W)."""
    img = _im2single(np.asarray(gray))
    dx, dy = smooth_gradient(img, sigma)
    mag = np.hypot(dx, dy)
    magmax = mag.max()
    if magmax > 0:
        mag = mag / magmax
    low, high = canny_thresholds(mag)
    # MATLAB compares single arrays with double scalars in single precision.
    low_t, high_t = mag.dtype.type(low), mag.dtype.type(high)
    weak = _nms_weak(dx, dy, mag, low_t)
    strong = weak & (mag > high_t)
    if not strong.any():
        return np.zeros(mag.shape, dtype=bool)
    labels, count = ndimage.label(weak, structure=_EIGHT)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels]


# --------------------------------------------------------------------------- binning + pyramid


def _check_gray_edges(gray: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gray, edges = np.asarray(gray), np.asarray(edges, dtype=bool)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ValueError(f"gray must be a 2-D image with sides >= 2, got shape {gray.shape}")
    if edges.shape != gray.shape:
        raise ValueError(f"edges shape {edges.shape} does not match gray shape {gray.shape}")
    return gray, edges


def _edge_votes(
    gray: np.ndarray, edges: np.ndarray, bins: int, angle: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """anna_BinMatrix restricted to the voting pixels: (rows, cols, bin, weight), each (K,).

    Gradients and orientations are evaluated only at edge pixels (a few % of the frame) with the
    same per-pixel arithmetic as MATLAB's ``gradient`` / np.gradient, so values are identical.
    """
    g = np.asarray(gray).astype(np.float64)
    height, width = g.shape
    rows, cols = np.nonzero(edges)

    def central(f_plus: np.ndarray, f_minus: np.ndarray, interior: np.ndarray) -> np.ndarray:
        # interior: (f(i+1) - f(i-1))/2; borders: one-sided f(2)-f(1), f(n)-f(n-1).
        return np.where(interior, (f_plus - f_minus) / 2.0, f_plus - f_minus)

    c_hi, c_lo = np.minimum(cols + 1, width - 1), np.maximum(cols - 1, 0)
    r_hi, r_lo = np.minimum(rows + 1, height - 1), np.maximum(rows - 1, 0)
    gx = central(g[rows, c_hi], g[rows, c_lo], (cols > 0) & (cols < width - 1))
    gy = central(g[r_hi, cols], g[r_lo, cols], (rows > 0) & (rows < height - 1))
    mag = np.sqrt(gx * gx + gy * gy)
    gx[gx == 0] = 1e-5  # the reference does this before the orientation (not only for 180)
    if angle == 180:
        a = ((np.arctan(gy / gx) + (np.pi / 2)) * 180) / np.pi
    else:
        a = ((np.arctan2(gy, gx) + np.pi) * 180) / np.pi
    b = np.ceil(a / (angle / bins)).astype(np.int64)
    vote = mag > 0
    return rows[vote], cols[vote], b[vote], mag[vote]


def bin_matrix(
    gray: np.ndarray, edges: np.ndarray, bins: int = 8, angle: int = 360
) -> tuple[np.ndarray, np.ndarray]:
    """anna_BinMatrix: per-pixel orientation bin ``bh`` (H, W) int64 and vote weight ``bv`` (H, W).

    Pixels that do not vote (not an edge, or zero gradient magnitude) have ``bh = 0, bv = 0``.
    ``bh`` may hold 0 or ``bins+1`` at exact boundaries; the pyramid ignores those, as does the
    reference.
    """
    _check_params(bins, angle, 0)
    gray, edges = _check_gray_edges(gray, edges)
    rows, cols, b, v = _edge_votes(gray, edges, bins, angle)
    bh = np.zeros(gray.shape, dtype=np.int64)
    bv = np.zeros(gray.shape)
    bh[rows, cols] = b
    bv[rows, cols] = v
    return bh, bv


def _cell_grid(height: int, width: int, level: int) -> tuple[int, int, int, int]:
    """Cell size (y, x) and counts (rows, cols) of anna_phogDescriptor's loops at ``level``."""
    x = width // 2**level
    y = height // 2**level
    return y, x, height // y, width // x


def phog_length(height: int, width: int, bins: int = 8, levels: int = 3) -> int:
    """PHOG length for a (height, width) image: ``bins * sum(4**l)`` when sides >= 4**levels."""
    _check_params(bins, 360, levels)
    if min(height, width) < 2**levels:
        raise ValueError(f"a {height}x{width} image is too small for {levels} pyramid levels")
    total = 0
    for level in range(levels + 1):
        _, _, ny, nx = _cell_grid(height, width, level)
        total += ny * nx
    return bins * total


def _pyramid_from_votes(
    rows: np.ndarray,
    cols: np.ndarray,
    b: np.ndarray,
    v: np.ndarray,
    shape: tuple[int, int],
    bins: int,
    levels: int,
) -> np.ndarray:
    """anna_phogDescriptor from the voting pixels (rows, cols, bin 1-based, weight), each (K,)."""
    height, width = shape
    ok = (b >= 1) & (b <= bins)  # bins 0 and bins+1 exist in bh but are never counted
    rows, cols, b, v = rows[ok], cols[ok], b[ok] - 1, v[ok]
    parts = []
    for level in range(levels + 1):
        y, x, ny, nx = _cell_grid(height, width, level)
        inside = (rows < ny * y) & (cols < nx * x)  # pixels past the last whole cell are dropped
        cell = (cols[inside] // x) * ny + rows[inside] // y  # column-major cell order
        parts.append(
            np.bincount(cell * bins + b[inside], weights=v[inside], minlength=ny * nx * bins)
        )
    p = np.concatenate(parts).astype(np.float64)
    total = p.sum()
    if total != 0:
        p = p / total
    return p


def pyramid_histogram(bh: np.ndarray, bv: np.ndarray, bins: int = 8, levels: int = 3) -> np.ndarray:
    """anna_phogDescriptor(bh, bv, L, bin): per-cell histograms of levels 0..L, L1-normalised.

    ``bh``, ``bv`` are (H, W) as from :func:`bin_matrix`; returns float64 (phog_length(H, W),).
    """
    _check_params(bins, 360, levels)
    rows, cols = np.nonzero(bh)
    return _pyramid_from_votes(rows, cols, bh[rows, cols], bv[rows, cols], bh.shape, bins, levels)


def phog_from_edges(
    gray: np.ndarray, edges: np.ndarray, bins: int = 8, angle: int = 360, levels: int = 3
) -> np.ndarray:
    """PHOG of a grey image (H, W) given its bool edge map (H, W); module doc steps 2, 4-6."""
    _check_params(bins, angle, levels)
    gray, edges = _check_gray_edges(gray, edges)
    if np.sum(gray, dtype=np.float64) > 100:
        rows, cols, b, v = _edge_votes(gray, edges, bins, angle)
    else:
        rows = cols = b = np.zeros(0, dtype=np.int64)
        v = np.zeros(0)
    return _pyramid_from_votes(rows, cols, b, v, gray.shape, bins, levels)


def phog(image: np.ndarray, bins: int = 8, angle: int = 360, levels: int = 3) -> np.ndarray:
    """PHOG descriptor of an image, as VGG's anna_phog.m over the full frame.

    Parameters
    ----------
    image : (H, W) grey or (H, W, 3) RGB, uint8 or float; sides >= max(2, 2**levels).
    bins : orientation bins per histogram.
    angle : 360 (signed orientation) or 180 (unsigned).
    levels : pyramid levels L; level l has 2^l x 2^l cells.

    Returns
    -------
    float64 array (bins * sum(4**l for l in 0..L),), 680 for the defaults, summing to 1, or all
    zeros for an image without edges (see ``phog_length`` for frames smaller than 4**L).
    """
    _check_params(bins, angle, levels)
    gray = validate_image(image, levels)
    if np.sum(gray, dtype=np.float64) > 100:
        edges = canny_matlab(gray)
    else:
        edges = np.zeros(gray.shape, dtype=bool)
    return phog_from_edges(gray, edges, bins, angle, levels)
