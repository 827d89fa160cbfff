"""Literal ports of the reference MATLAB code, for tests and benchmarks ONLY.

Nothing in the pipeline should import this module. It exists so the tests can check that the
fast descriptors in :mod:`emoprune.features.lpq` / :mod:`emoprune.features.phog` reproduce the
reference algorithms, and so the benchmarks can time them against a baseline. The ports follow
the MATLAB line by line and loop where the MATLAB loops (pixel loops in ``anna_BinMatrix``, cell
loops in ``anna_phogDescriptor``, the 8 planes and ``hist`` in ``lpq.m``); MATLAB built-ins are
translated with their documented semantics:

- ``conv2(A, B, 'valid')`` -> ``scipy.signal.convolve2d(A, B, mode='valid')``;
- ``imfilter(I, k, 'conv', 'replicate')`` with a vector ``k`` -> ``scipy.ndimage.convolve1d``;
- ``bwlabel(E)`` -> ``scipy.ndimage.label`` with 8-connectivity;
- ``bwselect(E, c, r, 8)`` -> a breadth-first flood fill from the seed pixels;
- ``find`` -> column-major linear indices, as MATLAB's.

Sources: lpq.m (Heikkila, Rahtu & Ojansivu, 2010 release); anna_phog.m, anna_BinMatrix.m,
anna_phogDescriptor.m (Bosch & Zisserman, VGG 2007); edge.m 'canny' of the Image Processing
Toolbox R2011a-R2016 (smoothGradient, selectThresholds, thinAndThreshold, cannyFindLocalMaxima).

``synthetic_face_frame`` makes face-like test frames (no real data is needed by the tests).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy import ndimage
from scipy.signal import convolve2d

__all__ = [
    "lpq_reference",
    "rgb2gray_reference",
    "edge_canny_reference",
    "anna_binmatrix_reference",
    "anna_phogdescriptor_reference",
    "anna_phog_reference",
    "synthetic_face_frame",
]


# =========================================================================== lpq.m


def lpq_reference(
    img: np.ndarray, win_size: int = 3, decorrelate: bool = True, rho: float = 0.90
) -> np.ndarray:
    """lpq.m with freqestim=1 (STFT, uniform window) and mode='nh'; returns (256,) float64."""
    img = np.asarray(img, dtype=np.float64)  # img=double(img)
    conv_mode = "valid"
    stft_alpha = 1 / win_size
    r = (win_size - 1) / 2
    x = np.arange(-r, r + 1)  # x=-r:r

    # Basic STFT filters
    w0 = x * 0 + 1
    w1 = np.exp(1j * (-2 * np.pi * x * stft_alpha))  # exp(complex(0,-2*pi*x*STFTalpha))
    w2 = np.conj(w1)

    def col(w):  # w.'
        return w.reshape(-1, 1)

    def row(w):
        return w.reshape(1, -1)

    def conv2(a, b):
        return convolve2d(a, b, mode=conv_mode)

    filter_resp = conv2(conv2(img, col(w0)), row(w1))
    freq_resp = np.zeros((filter_resp.shape[0], filter_resp.shape[1], 8))
    freq_resp[:, :, 0] = filter_resp.real
    freq_resp[:, :, 1] = filter_resp.imag
    filter_resp = conv2(conv2(img, col(w1)), row(w0))
    freq_resp[:, :, 2] = filter_resp.real
    freq_resp[:, :, 3] = filter_resp.imag
    filter_resp = conv2(conv2(img, col(w1)), row(w1))
    freq_resp[:, :, 4] = filter_resp.real
    freq_resp[:, :, 5] = filter_resp.imag
    filter_resp = conv2(conv2(img, col(w1)), row(w2))
    freq_resp[:, :, 6] = filter_resp.real
    freq_resp[:, :, 7] = filter_resp.imag
    freq_row, freq_col, freq_num = freq_resp.shape

    if decorrelate:
        # Covariance between pixel positions x_i and x_j is rho^||x_i-x_j||
        xp, yp = np.meshgrid(np.arange(1, win_size + 1), np.arange(1, win_size + 1))
        pp = np.column_stack([xp.ravel(order="F"), yp.ravel(order="F")]).astype(np.float64)
        dd = np.zeros((pp.shape[0], pp.shape[0]))
        for i in range(pp.shape[0]):  # dist(pp, pp')
            for j in range(pp.shape[0]):
                dd[i, j] = math.sqrt((pp[i, 0] - pp[j, 0]) ** 2 + (pp[i, 1] - pp[j, 1]) ** 2)
        c = rho**dd

        q1 = np.outer(w0, w1)  # w0.'*w1
        q2 = np.outer(w1, w0)
        q3 = np.outer(w1, w1)
        q4 = np.outer(w1, w2)
        u = [q1.real, q1.imag, q2.real, q2.imag, q3.real, q3.imag, q4.real, q4.imag]
        m = np.array([ui.ravel(order="F") for ui in u])  # [u1(:)';...;u8(:)']

        d = m @ c @ m.T
        a = np.diag([1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1])
        _, _, vh = np.linalg.svd(a @ d @ a)  # [U,S,V]=svd(A*D*A)
        v = vh.T

        # Force the sign of the largest magnitude element in each singular vector to be positive
        ii = np.argmax(np.abs(v), axis=0)
        v = v @ np.diag(
            np.ones(v.shape[1]) - 2 * (v[ii, np.arange(len(ii))] < -np.finfo(float).eps)
        )

        freq_resp = freq_resp.reshape(freq_row * freq_col, freq_num, order="F")
        freq_resp = (v.T @ freq_resp.T).T
        freq_resp = freq_resp.reshape(freq_row, freq_col, freq_num, order="F")

    lpq_desc = np.zeros((freq_row, freq_col))
    for i in range(freq_num):
        lpq_desc = lpq_desc + (freq_resp[:, :, i] > 0) * (2**i)

    hist = np.zeros(256)  # hist(LPQdesc(:), 0:255)
    for code in lpq_desc.ravel(order="F"):
        hist[int(code)] += 1
    return hist / hist.sum()


# =========================================================================== rgb2gray


def rgb2gray_reference(rgb: np.ndarray) -> np.ndarray:
    """rgb2gray: weighted sum of R, G, B; uint8 in -> round (half away from zero) to uint8."""
    coef = (0.298936021293775, 0.587043074451121, 0.114020904255103)
    out = np.zeros(rgb.shape[:2])
    for k in range(3):
        out = out + rgb[:, :, k].astype(np.float64) * coef[k]
    if rgb.dtype == np.uint8:
        rounded = np.floor(out)
        rounded[out - rounded >= 0.5] += 1  # MATLAB round: half away from zero (out >= 0)
        out = np.clip(rounded, 0, 255).astype(np.uint8)
    return out


# =========================================================================== edge.m canny


def _matlab_gradient(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[GX, GY] = gradient(F): central differences inside, one-sided at the borders."""
    f = np.asarray(f, dtype=np.float64)
    gx = np.zeros_like(f)
    gy = np.zeros_like(f)
    n = f.shape[1]
    gx[:, 0] = f[:, 1] - f[:, 0]
    gx[:, n - 1] = f[:, n - 1] - f[:, n - 2]
    gx[:, 1 : n - 1] = (f[:, 2:n] - f[:, 0 : n - 2]) / 2
    m = f.shape[0]
    gy[0, :] = f[1, :] - f[0, :]
    gy[m - 1, :] = f[m - 1, :] - f[m - 2, :]
    gy[1 : m - 1, :] = (f[2:m, :] - f[0 : m - 2, :]) / 2
    return gx, gy


def _smooth_gradient_reference(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    filter_extent = math.ceil(4 * sigma)
    x = np.arange(-filter_extent, filter_extent + 1, dtype=np.float64)
    c = 1 / (math.sqrt(2 * math.pi) * sigma)
    gauss_kernel = c * np.exp(-(x**2) / (2 * sigma**2))
    gauss_kernel = gauss_kernel / np.sum(gauss_kernel)
    deriv = np.gradient(gauss_kernel)
    neg_vals = deriv < 0
    pos_vals = deriv > 0
    deriv[pos_vals] = deriv[pos_vals] / np.sum(deriv[pos_vals])
    deriv[neg_vals] = deriv[neg_vals] / abs(np.sum(deriv[neg_vals]))

    def imfilter(a, k, axis):  # imfilter(a, k, 'conv', 'replicate') for a vector k
        return ndimage.convolve1d(a, k, axis=axis, mode="nearest")

    gx = imfilter(img, gauss_kernel, axis=0)  # gaussKernel' (column vector)
    gx = imfilter(gx, deriv, axis=1)
    gy = imfilter(img, gauss_kernel, axis=1)
    gy = imfilter(gy, deriv, axis=0)
    return gx, gy


def _canny_find_local_maxima(
    direction: int, ix: np.ndarray, iy: np.ndarray, mag: np.ndarray
) -> np.ndarray:
    """cannyFindLocalMaxima: column-major linear indices of the local maxima in one sector."""
    m, n = mag.shape
    ixf, iyf, magf = ix.ravel(order="F"), iy.ravel(order="F"), mag.ravel(order="F")
    if direction == 1:
        idx = np.flatnonzero(((iyf <= 0) & (ixf > -iyf)) | ((iyf >= 0) & (ixf < -iyf)))
    elif direction == 2:
        idx = np.flatnonzero(((ixf > 0) & (-iyf >= ixf)) | ((ixf < 0) & (-iyf <= ixf)))
    elif direction == 3:
        idx = np.flatnonzero(((ixf <= 0) & (ixf > iyf)) | ((ixf >= 0) & (ixf < iyf)))
    else:
        idx = np.flatnonzero(((iyf < 0) & (ixf <= iyf)) | ((iyf > 0) & (ixf >= iyf)))

    # Exclude the exterior pixels (MATLAB's 1-based test translated to 0-based idx)
    if idx.size:
        v = np.mod(idx + 1, m)
        ext = (v == 1) | (v == 0) | (idx + 1 <= m) | (idx + 1 > (n - 1) * m)
        idx = idx[~ext]

    ixv, iyv = ixf[idx], iyf[idx]
    gradmag = magf[idx]
    one = mag.dtype.type(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if direction == 1:
            d = np.abs(iyv / ixv)
            gradmag1 = magf[idx + m] * (one - d) + magf[idx + m - 1] * d
            gradmag2 = magf[idx - m] * (one - d) + magf[idx - m + 1] * d
        elif direction == 2:
            d = np.abs(ixv / iyv)
            gradmag1 = magf[idx - 1] * (one - d) + magf[idx + m - 1] * d
            gradmag2 = magf[idx + 1] * (one - d) + magf[idx - m + 1] * d
        elif direction == 3:
            d = np.abs(ixv / iyv)
            gradmag1 = magf[idx - 1] * (one - d) + magf[idx - m - 1] * d
            gradmag2 = magf[idx + 1] * (one - d) + magf[idx + m + 1] * d
        else:
            d = np.abs(iyv / ixv)
            gradmag1 = magf[idx - m] * (one - d) + magf[idx - m - 1] * d
            gradmag2 = magf[idx + m] * (one - d) + magf[idx + m + 1] * d
    return idx[(gradmag >= gradmag1) & (gradmag >= gradmag2)]


def _bwselect8(bw: np.ndarray, seeds_r: np.ndarray, seeds_c: np.ndarray) -> np.ndarray:
    """bwselect(BW, c, r, 8): the 8-connected objects of BW that contain a seed pixel."""
    m, n = bw.shape
    out = np.zeros_like(bw, dtype=bool)
    queue: deque[tuple[int, int]] = deque()
    for r, c in zip(seeds_r.tolist(), seeds_c.tolist(), strict=True):
        if bw[r, c] and not out[r, c]:
            out[r, c] = True
            queue.append((r, c))
    while queue:
        r, c = queue.popleft()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if 0 <= rr < m and 0 <= cc < n and bw[rr, cc] and not out[rr, cc]:
                    out[rr, cc] = True
                    queue.append((rr, cc))
    return out


def edge_canny_reference(gray: np.ndarray, sigma: float = math.sqrt(2)) -> np.ndarray:
    """edge(I, 'canny') of the R2011a+ toolbox with automatic thresholds; bool (H, W)."""
    a = np.asarray(gray)
    if a.dtype.kind in "ui":  # a = im2single(a)
        info = np.iinfo(a.dtype)
        a = ((a.astype(np.float64) - info.min) / (float(info.max) - info.min)).astype(np.float32)
    elif a.dtype != np.float32:
        a = a.astype(np.float64)
    m, n = a.shape

    percent_of_pixels_not_edges = 0.7
    threshold_ratio = 0.4

    dx, dy = _smooth_gradient_reference(a, sigma)
    mag_grad = np.hypot(dx, dy)
    magmax = mag_grad.max()
    if magmax > 0:
        mag_grad = mag_grad / magmax

    # selectThresholds: counts = imhist(magGrad, 64)
    counts = np.zeros(64)
    bins = np.clip(np.floor(mag_grad.astype(np.float64) * 63 + 0.5), 0, 63).astype(int)
    for k in range(64):
        counts[k] = np.count_nonzero(bins == k)
    above = np.flatnonzero(np.cumsum(counts) > percent_of_pixels_not_edges * m * n)
    high_thresh = (above[0] + 1) / 64
    low_thresh = threshold_ratio * high_thresh
    low_t, high_t = mag_grad.dtype.type(low_thresh), mag_grad.dtype.type(high_thresh)

    # thinAndThreshold
    e = np.zeros(m * n, dtype=bool)
    idx_strong = []
    mag_f = mag_grad.ravel(order="F")
    for direction in range(1, 5):
        idx_local_max = _canny_find_local_maxima(direction, dx, dy, mag_grad)
        idx_weak = idx_local_max[mag_f[idx_local_max] > low_t]
        e[idx_weak] = True
        idx_strong.extend(idx_weak[mag_f[idx_weak] > high_t].tolist())
    e = e.reshape((m, n), order="F")
    if not idx_strong:
        return np.zeros((m, n), dtype=bool)
    idx_strong_arr = np.array(idx_strong)
    r_strong = idx_strong_arr % m
    c_strong = idx_strong_arr // m
    return _bwselect8(e, r_strong, c_strong)


# =========================================================================== anna_phog


def anna_binmatrix_reference(
    a: np.ndarray, e: np.ndarray, g: np.ndarray, angle: int, bin_: int
) -> tuple[np.ndarray, np.ndarray]:
    """anna_BinMatrix(A, E, G, angle, bin): per-pixel bin ``bm`` and gradient value ``bv``."""
    contorns, n = ndimage.label(e, structure=np.ones((3, 3), dtype=bool))  # bwlabel(E) (8-conn)
    y_size, x_size = e.shape
    bm = np.zeros((y_size, x_size))
    bv = np.zeros((y_size, x_size))
    n_angle = angle / bin_
    for i in range(1, n + 1):
        pos_y, pos_x = np.nonzero((contorns == i).T)[::-1]  # find(): column-major order
        for j in range(pos_y.shape[0]):
            px = pos_x[j]
            py = pos_y[j]
            b = math.ceil(a[py, px] / n_angle)
            if b == 0:
                bin_ = 1  # sic: the reference assigns `bin`, not `b`, so b stays 0  # noqa: F841
            if g[py, px] > 0:
                bm[py, px] = b
                bv[py, px] = g[py, px]
    return bm, bv


def anna_phogdescriptor_reference(
    bh: np.ndarray,
    bv: np.ndarray,
    L: int,  # noqa: N803 (the reference's name)
    bin_: int,
) -> np.ndarray:
    """anna_phogDescriptor(bh, bv, L, bin)."""
    p = []
    # level 0
    for b in range(1, bin_ + 1):
        ind = bh == b
        p.append(np.sum(bv[ind]))
    for level in range(1, L + 1):
        x = int(bh.shape[1] / (2**level))  # fix()
        y = int(bh.shape[0] / (2**level))
        xx = 0
        yy = 0
        while xx + x <= bh.shape[1]:
            while yy + y <= bh.shape[0]:
                bh_cella = bh[yy : yy + y, xx : xx + x]
                bv_cella = bv[yy : yy + y, xx : xx + x]
                for b in range(1, bin_ + 1):
                    ind = bh_cella == b
                    p.append(np.sum(bv_cella[ind]))
                yy = yy + y
            yy = 0
            xx = xx + x
    p_arr = np.array(p, dtype=np.float64)
    if np.sum(p_arr) != 0:
        p_arr = p_arr / np.sum(p_arr)
    return p_arr


def anna_phog_reference(
    image: np.ndarray,
    bin_: int = 8,
    angle: int = 360,
    L: int = 3,  # noqa: N803
    edges: np.ndarray | None = None,
    return_bins: bool = False,
):
    """anna_phog(I, bin, angle, L, roi) over the full image.

    ``edges`` replaces ``edge(G, 'canny')`` (to check the binning stage on a shared edge map);
    with ``return_bins`` the result is ``(p, bh, bv)``.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        g = rgb2gray_reference(img)
    else:
        g = img
    if np.sum(g.astype(np.float64)) > 100:
        e = edge_canny_reference(g) if edges is None else np.asarray(edges, dtype=bool)
        gradient_x, gradient_y = _matlab_gradient(g.astype(np.float64))
        gr = np.sqrt((gradient_x * gradient_x) + (gradient_y * gradient_y))
        index = gradient_x == 0
        gradient_x[index] = 1e-5
        yx = gradient_y / gradient_x
        if angle == 180:
            a = ((np.arctan(yx) + (np.pi / 2)) * 180) / np.pi
        else:
            a = ((np.arctan2(gradient_y, gradient_x) + np.pi) * 180) / np.pi
        bh, bv = anna_binmatrix_reference(a, e, gr, angle, bin_)
    else:
        bh = np.zeros(g.shape[:2])
        bv = np.zeros(g.shape[:2])
    p = anna_phogdescriptor_reference(bh, bv, L, bin_)
    return (p, bh, bv) if return_bins else p


# =========================================================================== test frames


def synthetic_face_frame(height: int = 227, width: int = 227, seed: int = 0) -> np.ndarray:
    """A face-like RGB uint8 frame (height, width, 3): lit background, head, eyes, brows, mouth.

    Smooth shading, soft and hard edges and sensor noise, so Canny and LPQ see realistic
    statistics; ``seed`` varies pose, size, lighting and noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / width, yy / height
    # Background: a lighting gradient plus blurred clutter.
    angle = rng.uniform(0, 2 * np.pi)
    base = 90 + 60 * (np.cos(angle) * (u - 0.5) + np.sin(angle) * (v - 0.5))
    clutter = ndimage.gaussian_filter(
        rng.normal(0, 1, (height, width)), sigma=min(height, width) / 20
    )
    grey = base + 40 * clutter / (np.abs(clutter).max() + 1e-12)
    for _ in range(3):  # a few background objects with hard edges
        cy, cx = rng.uniform(0, 1, 2)
        ry, rx = rng.uniform(0.05, 0.2, 2)
        grey = np.where(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 < 1, rng.uniform(30, 220), grey)
    # Head: an ellipse with side lighting.
    cx, cy = 0.5 + rng.uniform(-0.08, 0.08), 0.52 + rng.uniform(-0.05, 0.05)
    rx, ry = rng.uniform(0.24, 0.3), rng.uniform(0.32, 0.38)
    head = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
    skin = 170 + 35 * (u - cx) / rx * rng.choice([-1, 1]) - 25 * head
    grey = np.where(head < 1, skin, grey)
    hair = (head < 1.15) & (v < cy - 0.55 * ry)
    grey = np.where(hair, 45 + 15 * rng.random(), grey)
    # Eyes, brows, nose shadow, mouth.
    for side in (-1, 1):
        ex, ey = cx + side * 0.4 * rx, cy - 0.15 * ry
        eye = ((u - ex) / (0.18 * rx)) ** 2 + ((v - ey) / (0.06 * ry)) ** 2
        grey = np.where(eye < 1, 235, grey)
        grey = np.where(((u - ex) / (0.07 * rx)) ** 2 + ((v - ey) / (0.05 * ry)) ** 2 < 1, 35, grey)
        brow = ((u - ex) / (0.22 * rx)) ** 2 + ((v - ey + 0.14 * ry) / (0.025 * ry)) ** 2
        grey = np.where(brow < 1, 60, grey)
    nose = (np.abs(u - cx - 0.03 * rx) < 0.02 * rx) & (v > cy - 0.05 * ry) & (v < cy + 0.2 * ry)
    grey = np.where(nose, grey - 35, grey)
    smile = rng.uniform(-0.08, 0.12)
    mouth_v = cy + 0.45 * ry - smile * ry * (1 - ((u - cx) / (0.35 * rx)) ** 2)
    mouth = (np.abs(u - cx) < 0.35 * rx) & (np.abs(v - mouth_v) < 0.035 * ry)
    grey = np.where(mouth, 95, grey)
    # Optics and sensor: blur, colour cast, noise.
    grey = ndimage.gaussian_filter(grey, sigma=max(0.6, min(height, width) / 300))
    tint = np.array([1.08, 0.97, 0.86]) + rng.uniform(-0.05, 0.05, 3)
    rgb = grey[..., None] * tint + rng.normal(0, 3.0, (height, width, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
