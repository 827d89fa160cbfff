"""What a conv net is fed: uint8 frames (N, H, W, 3) -> normalised float32 (N, 3, H, W) tensors.

One conversion for every conv net: the CNN normalises with its training fold's channel stats,
the ResNets with ImageNet's (``resnet.prepare_inputs``).
"""

from __future__ import annotations

import numpy as np
import torch


def channel_histograms(images_uint8_nhwc: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """Each image's count of each of the 256 values in each channel: (N, 3, 256) int64, for
    (N, H, W, 3) uint8 images.

    Summed over any subset of the images they give that subset's ``channel_stats`` exactly
    (``histogram_stats``): a stage that normalises every fold computes them once, not once per
    fold and model. One ``bincount`` per ``chunk`` images, the image and channel folded into the
    bin number; the memory is an integer copy of one chunk (80 MB for 64 frames of 227 px).
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    n = images.shape[0]
    out = np.empty((n, 3, 256), dtype=np.int64)
    bins = 3 * 256
    dtype = np.uint16 if chunk * bins <= 1 << 16 else np.uint32  # the largest bin must fit
    for start in range(0, n, chunk):
        part = images[start : start + chunk]
        c = len(part)
        # Value v of channel ch in image i counts into bin 768 i + 256 ch + v.
        offsets = np.arange(c, dtype=dtype)[:, None] * bins + np.arange(3, dtype=dtype) * 256
        index = part + offsets.reshape(c, 1, 1, 3)  # in offsets' dtype
        out[start : start + c] = np.bincount(index.ravel(), minlength=c * bins).reshape(c, 3, 256)
    return out


def histogram_stats(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std on the [0, 1] scale of images whose channel
    histograms (``channel_histograms``) sum to ``hist`` (3, 256). The sums are exact integers.
    Returns two float64 (3,)."""
    hist = np.asarray(hist).astype(np.uint64)
    count = int(hist[0].sum())
    if count == 0:
        raise ValueError("channel statistics need at least one pixel")
    values = np.arange(256, dtype=np.uint64)
    total, total_sq = hist @ values, hist @ (values * values)
    mean = total / (255.0 * count)
    var = total_sq / (255.0**2 * count) - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))  # clamp tiny negative rounding


def channel_stats(
    images_uint8_nhwc: np.ndarray, *, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of (N, H, W, 3) uint8 images on the [0, 1] scale,
    from their histograms (``channel_histograms``): exact integer sums, twice as fast as summing
    the (pixels, 3) columns. Returns two float64 (3,).
    """
    # No images: histogram_stats refuses their all-zero sum.
    return histogram_stats(channel_histograms(images_uint8_nhwc, chunk=chunk).sum(axis=0))


def to_tensor_images(
    images_uint8_nhwc: np.ndarray, mean: np.ndarray, std: np.ndarray, *, chunk: int = 64
) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, scaled to [0, 1] then ``(x - mean) / std``.

    Filled chunk by chunk into one preallocated tensor, so the peak memory is the output plus
    one chunk (a whole-array ``permute().float()`` would need two float copies). The result is
    channels_last (an NHWC buffer seen as NCHW), the conv nets' layout: gathering a batch from
    it is a plain row copy, and no copy is made again in the forward pass.
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(1, 3, 1, 1)
    # A constant channel has std 0; it carries no information, so just avoid dividing by zero.
    std_t = torch.as_tensor(np.maximum(np.asarray(std, dtype=np.float64), 1e-8)).reshape(1, 3, 1, 1)
    scale = (1.0 / (255.0 * std_t)).float()  # (x/255 - m)/s == x * scale - shift
    shift = (mean_t / std_t).float()
    n, h, w, _ = images.shape
    out = torch.empty((n, 3, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    for start in range(0, n, chunk):
        part = out[start : start + chunk]
        # np.array copies the chunk: the images may be a read-only memory map.
        part.copy_(torch.from_numpy(np.array(images[start : start + chunk])).permute(0, 3, 1, 2))
        part.mul_(scale).sub_(shift)
    return out


def take_rows(
    x: torch.Tensor, index: np.ndarray | torch.Tensor, dtype: torch.dtype, *, chunk: int = 64
) -> torch.Tensor:
    """``x[index].to(dtype)``: (len(index), ...) in ``x``'s memory format, gathered ``chunk``
    rows at a time, so that no full copy in ``x``'s dtype is made on the way (for a full-size
    fold of 224 px float32 images, 325 MB that a plain ``x[index].to(dtype)`` would hold at
    once)."""
    index = torch.as_tensor(index, dtype=torch.long)
    layout = (
        torch.channels_last
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    out = torch.empty(
        (len(index), *x.shape[1:]), dtype=dtype, device=x.device, memory_format=layout
    )
    for start in range(0, len(index), chunk):
        out[start : start + chunk].copy_(x[index[start : start + chunk]])
    return out
