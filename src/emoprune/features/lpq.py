"""Local Phase Quantization (LPQ) histogram, a vectorised port of Oulu's ``lpq.m``.

Reproduces ``lpq.m`` (Ojansivu & Heikkila 2008; the 2010 release by Heikkila, Rahtu and
Ojansivu) in its default mode: ``freqestim=1`` (STFT with a uniform window), ``mode='nh'``
(normalised 256-bin histogram), ``'valid'`` convolutions, decorrelation with ``rho=0.90``.

Why the arithmetic is spelled out instead of calling ``convolve2d``
-----------------------------------------------------------------------
Each LPQ bit is the sign of a filter response. On integer images many responses are zero in
exact arithmetic (e.g. ``2*s0 == s-1 + s1``) and come out as ``+-1e-14`` rounding noise, so the
bit depends on the exact order of floating-point operations. To stay *bit-identical* to the
literal port in :mod:`benchmarks.reference` (which calls ``scipy.signal.convolve2d`` the
way ``lpq.m`` calls ``conv2``) the 1-D convolutions below accumulate taps in the same order and
split complex products into real arithmetic exactly as scipy's C loop does. The speed comes from
doing it on whole shifted slices (in cache-sized bands of rows), computing ``conv2(img, w1.')``
once instead of three times, sharing products between the ``w1``/``w2`` passes, and OR-ing the
8 sign bits into a uint8 code image.

(MATLAB's own ``conv2`` may round those zero responses the other way, so on such degenerate
pixels no port can promise MATLAB's exact bit; everywhere else the codes are the same.)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["lpq", "lpq_code_image", "whitening_matrix", "stft_filters"]

# lpq.m's "random" (almost unit) diagonal, used to avoid repeated singular values.
_SVD_JITTER = np.array([1.000007, 1.000006, 1.000005, 1.000004, 1.000003, 1.000002, 1.000001, 1.0])


def _check_win_size(win_size: int) -> int:
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)):
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if win_size < 3 or win_size % 2 != 1:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}")
    return int(win_size)


def validate_gray(gray: np.ndarray, win_size: int) -> np.ndarray:
    """Check an LPQ input; return it as float64 (H, W) or raise ValueError naming the problem."""
    win_size = _check_win_size(win_size)
    arr = np.asarray(gray)
    if arr.ndim != 2:
        raise ValueError(f"gray must be a 2-D greyscale image, got an array with ndim={arr.ndim}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"gray must have a real numeric dtype, got {arr.dtype}")
    if arr.shape[0] < win_size or arr.shape[1] < win_size:
        raise ValueError(
            f"image of shape {arr.shape} is smaller than the {win_size}x{win_size} LPQ window"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("gray contains NaN or infinite values")
    return arr


def stft_filters(win_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 1-D STFT filters of lpq.m: ``w0`` (ones), ``w1 = exp(-2*pi*i*x/win)``, ``w2 = conj(w1)``.

    Each has shape (win_size,); ``x = -r..r`` with ``r = (win_size-1)/2``. Read-only (cached).
    """
    return _stft_filters_cached(_check_win_size(win_size))


@lru_cache(maxsize=32)
def _stft_filters_cached(win_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = (win_size - 1) / 2
    x = np.arange(-r, r + 1)
    alpha = 1.0 / win_size
    w0 = x * 0 + 1
    # Same operation order as lpq.m's exp(complex(0,-2*pi*x*STFTalpha)) so the taps match.
    w1 = np.exp(1j * (-2 * np.pi * x * alpha))
    filters = (w0, w1, np.conj(w1))
    for f in filters:
        f.setflags(write=False)
    return filters


@lru_cache(maxsize=32)
def _whitening_matrix_cached(win_size: int, rho: float) -> np.ndarray:
    w0, w1, w2 = stft_filters(win_size)
    # Covariance of pixel positions, column-major like MATLAB's meshgrid + (:).
    xp, yp = np.meshgrid(np.arange(1, win_size + 1), np.arange(1, win_size + 1))
    pp = np.column_stack([xp.ravel(order="F"), yp.ravel(order="F")]).astype(np.float64)
    dd = np.sqrt(((pp[:, None, :] - pp[None, :, :]) ** 2).sum(axis=2))
    cov = rho**dd
    q = [np.outer(w0, w1), np.outer(w1, w0), np.outer(w1, w1), np.outer(w1, w2)]
    rows = []
    for qi in q:
        rows.append(qi.real.ravel(order="F"))
        rows.append(qi.imag.ravel(order="F"))
    m = np.array(rows)
    d = m @ cov @ m.T
    a = np.diag(_SVD_JITTER)
    _, _, vh = np.linalg.svd(a @ d @ a)
    v = vh.T
    # lpq.m: make the largest-magnitude element of each singular vector positive (SVD sign is
    # arbitrary between LAPACK builds; this pins it down).
    ii = np.argmax(np.abs(v), axis=0)
    flip = v[ii, np.arange(v.shape[1])] < -np.finfo(np.float64).eps
    v = v @ np.diag(1.0 - 2.0 * flip)
    v.setflags(write=False)
    return v


def whitening_matrix(win_size: int = 3, rho: float = 0.90) -> np.ndarray:
    """lpq.m's decorrelating transform ``V`` (8, 8); responses are whitened as ``V.T @ F``."""
    return _whitening_matrix_cached(_check_win_size(win_size), float(rho))


def _taps(x: np.ndarray, k: int, axis: int) -> list[np.ndarray]:
    """Views of ``x`` shifted for a 'valid' convolution with a k-tap kernel, in scipy's tap order.

    Element j of the result multiplies kernel tap j (convolution flips the kernel, so tap j reads
    input offset k-1-j); scipy's convolve2d accumulates j = 0, 1, ..., k-1.
    """
    n = x.shape[axis] - k + 1
    if axis == 0:
        return [x[k - 1 - j : k - 1 - j + n] for j in range(k)]
    return [x[:, k - 1 - j : k - 1 - j + n] for j in range(k)]


def _conv_real_ones(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """'valid' convolution of a real array with ``ones(k)`` along ``axis``."""
    taps = _taps(x, k, axis)
    acc = taps[0].copy()
    for t in taps[1:]:
        acc += t
    return acc


def _conv_real_complex(x: np.ndarray, h: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """'valid' convolution of a real array with a complex kernel; returns (real, imag).

    scipy upcasts ``x`` to complex; ``(a+0i)(c+di)`` then rounds exactly like ``a*c`` and ``a*d``.
    """
    taps = _taps(x, len(h), axis)
    re = taps[0] * h[0].real
    im = taps[0] * h[0].imag
    for t, c in zip(taps[1:], h[1:], strict=True):
        re += t * c.real
        im += t * c.imag
    return re, im


def _conv_complex_ones(
    xr: np.ndarray, xi: np.ndarray, k: int, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """'valid' convolution of a complex array (given as real, imag) with ``ones(k)``."""
    return _conv_real_ones(xr, k, axis), _conv_real_ones(xi, k, axis)


def _conv_complex_w1_w2(
    xr: np.ndarray, xi: np.ndarray, h: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Convolve a complex array with ``h`` and ``conj(h)`` at once; returns (re1, im1, re2, im2).

    Per tap scipy adds ``(a*c - b*d)`` and ``(a*d + b*c)``. With ``conj(h)`` the products only
    change sign (exact), so the four products are shared between both kernels.
    """
    taps_r, taps_i = _taps(xr, len(h), axis), _taps(xi, len(h), axis)
    re1 = im1 = re2 = im2 = None
    for a, b, c in zip(taps_r, taps_i, h, strict=True):
        ac, bd, ad, bc = a * c.real, b * c.imag, a * c.imag, b * c.real
        t_re1, t_im1 = ac - bd, ad + bc
        t_re2, t_im2 = ac + bd, bc - ad  # == a*c - b*(-d), a*(-d) + b*c
        if re1 is None:
            re1, im1, re2, im2 = t_re1, t_im1, t_re2, t_im2
        else:
            re1 += t_re1
            im1 += t_im1
            re2 += t_re2
            im2 += t_im2
    return re1, im1, re2, im2


def _frequency_responses(img: np.ndarray, win_size: int) -> np.ndarray:
    """The 8 response planes of lpq.m, shape (8, H-win+1, W-win+1).

    Order: [Re f1, Im f1, Re f2, Im f2, Re f3, Im f3, Re f4, Im f4] for the frequencies
    f1=[a,0], f2=[0,a], f3=[a,a], f4=[a,-a] (a = 1/win_size), as in lpq.m's freqResp.
    """
    k = win_size
    out = np.empty((8, img.shape[0] - k + 1, img.shape[1] - k + 1))
    for r0, r1 in _bands(out.shape[1], img.shape[1]):
        _responses_band(img[r0 : r1 + k - 1], k, out[:, r0:r1])
    return out


# Output rows are processed in bands of about this many pixels: every temporary stays small
# (heap-allocated, cache-resident) and each (8x8)@(8xN) whitening product stays below
# OpenBLAS's threading threshold -- one big product wakes its thread pool, which on a busy
# 2-core machine costs more than the product itself. All arithmetic is per output pixel (and
# each whitened column is the same 8-term BLAS dot product), so banding changes no bit; the
# tests check this against the unbanded reference port.
_BAND_ELEMS = 4096


def _bands(n_rows: int, width: int) -> list[tuple[int, int]]:
    band = max(1, _BAND_ELEMS // max(width, 1))
    return [(r0, min(r0 + band, n_rows)) for r0 in range(0, n_rows, band)]


def _responses_band(img: np.ndarray, k: int, out: np.ndarray) -> None:
    """Fill ``out`` (8, h-k+1, w-k+1) with the responses of the image band ``img`` (h, w)."""
    _, w1, _ = stft_filters(k)
    # f1: conv2(conv2(img, w0.'), w1)
    col0 = _conv_real_ones(img, k, axis=0)
    out[0], out[1] = _conv_real_complex(col0, w1, axis=1)
    # f2..f4 share conv2(img, w1.'), which lpq.m recomputes three times.
    c1r, c1i = _conv_real_complex(img, w1, axis=0)
    out[2], out[3] = _conv_complex_ones(c1r, c1i, k, axis=1)
    out[4], out[5], out[6], out[7] = _conv_complex_w1_w2(c1r, c1i, w1, axis=1)


def lpq_code_image(
    gray: np.ndarray, win_size: int = 3, decorrelate: bool = True, rho: float = 0.90
) -> np.ndarray:
    """LPQ codewords (lpq.m's ``mode='im'``): uint8 array of shape (H-win+1, W-win+1).

    Bit i (value 2**i) is ``response_i > 0`` for the (whitened) response planes in lpq.m order,
    whitened as lpq.m's ``(V.'*freqResp.').'``.
    """
    img = validate_gray(gray, win_size)
    if decorrelate and not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho!r}")
    k = win_size
    n_rows, n_cols = img.shape[0] - k + 1, img.shape[1] - k + 1
    vt = whitening_matrix(win_size, rho).T if decorrelate else None
    codes = np.empty((n_rows, n_cols), dtype=np.uint8)
    for r0, r1 in _bands(n_rows, img.shape[1]):
        resp = np.empty((8, r1 - r0, n_cols))
        _responses_band(img[r0 : r1 + k - 1], k, resp)
        flat = resp.reshape(8, -1)
        if vt is not None:
            flat = vt @ flat
        band_codes = codes[r0:r1].reshape(-1)
        band_codes[:] = 0
        for bit in range(8):
            band_codes |= (flat[bit] > 0).view(np.uint8) << np.uint8(bit)
    return codes


def lpq(
    gray: np.ndarray, win_size: int = 3, decorrelate: bool = True, rho: float = 0.90
) -> np.ndarray:
    """Normalised LPQ histogram of a greyscale image (lpq.m defaults, ``mode='nh'``).

    Parameters
    ----------
    gray : array (H, W), any real dtype; H, W >= win_size.
    win_size : odd int >= 3, the local window (a = 1/win_size).
    decorrelate : whiten the 8 responses with the rho-correlation model before quantising.
    rho : correlation coefficient of neighbouring pixels in that model.

    Returns
    -------
    float64 array (256,), summing to 1: the fraction of valid pixels with each codeword.
    """
    codes = lpq_code_image(gray, win_size, decorrelate, rho)
    counts = np.bincount(codes.ravel(), minlength=256).astype(np.float64)
    return counts / counts.sum()
