"""The conv nets' input conversion: uint8 frames -> normalised channels_last float32 tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprune.models.inputs import (
    channel_histograms,
    channel_stats,
    histogram_stats,
    take_rows,
    to_tensor_images,
)


def test_channel_stats_known_array():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # channel 0: half 1.0, half 0.0 -> mean 0.5, std 0.5
    images[..., 1] = 51  # channel 1: constant 0.2 -> std 0
    images[:, :2, :, 2] = 255  # channel 2: half the rows of every image
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, [0.5, 0.2, 0.5], atol=1e-12)
    np.testing.assert_allclose(std, [0.5, 0.0, 0.5], atol=1e-7)


def test_channel_stats_chunks_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, (13, 9, 7, 3), dtype=np.uint8)
    scaled = images.astype(np.float64) / 255
    for chunk in (1, 4, 64):
        mean, std = channel_stats(images, chunk=chunk)
        np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
        np.testing.assert_allclose(std, scaled.std(axis=(0, 1, 2)), rtol=1e-9)


def test_channel_histograms_count_each_image_and_sum_to_any_subsets_stats():
    images = np.random.default_rng(1).integers(0, 256, (70, 6, 5, 3), dtype=np.uint8)
    images[3] = 255  # the top bin, in an image past the first chunk's offsets
    for chunk in (1, 7, 64, 100):  # 100 * 768 bins need uint32 indices
        hist = channel_histograms(images, chunk=chunk)
        assert hist.shape == (70, 3, 256) and hist.dtype == np.int64
        for i in (0, 3, 69):
            for c in range(3):
                expected = np.bincount(images[i, ..., c].ravel(), minlength=256)
                assert np.array_equal(hist[i, c], expected)
    subset = np.array([2, 3, 11, 40, 69])
    mean, std = histogram_stats(hist[subset].sum(axis=0))
    expected_mean, expected_std = channel_stats(images[subset])
    assert np.array_equal(mean, expected_mean) and np.array_equal(std, expected_std)
    with pytest.raises(ValueError, match="at least one pixel"):
        histogram_stats(np.zeros((3, 256), np.int64))
    with pytest.raises(ValueError, match="at least one pixel"):
        channel_stats(images[:0])


def test_to_tensor_images_layout_and_normalisation():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    mean, std = np.array([0.5, 0.25, 0.0]), np.array([0.25, 0.5, 1.0])
    out = to_tensor_images(images, mean, std, chunk=2)
    assert out.shape == (5, 3, 4, 6) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)  # the conv nets' layout
    expected = (images.astype(np.float64) / 255 - mean) / std  # (N, H, W, C)
    np.testing.assert_allclose(out.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    # Known values: 255 with mean .5, std .25 -> 2; 0 -> -2.
    edge = np.array([[[[255, 0, 0]]]], dtype=np.uint8)
    np.testing.assert_allclose(to_tensor_images(edge, mean, std).flatten().numpy(), [2, -0.5, 0])


def test_images_rejects_wrong_layout():
    with pytest.raises(ValueError):
        to_tensor_images(np.zeros((2, 3, 4, 4), np.uint8), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError):
        channel_stats(np.zeros((2, 4, 4, 3), np.float32))


@pytest.mark.parametrize("channels_last", [True, False])
def test_take_rows_is_the_indexed_cast_chunk_by_chunk(channels_last):
    x = torch.randn(7, 3, 5, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    index = np.array([6, 0, 3, 3, 5])
    for chunk in (1, 2, 64):  # chunk boundaries inside, at and past the rows
        out = take_rows(x, index, torch.bfloat16, chunk=chunk)
        assert out.dtype == torch.bfloat16 and torch.equal(out, x[index].to(torch.bfloat16))
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)
    assert take_rows(x, torch.tensor([], dtype=torch.long), torch.float32).shape == (0, 3, 5, 5)
