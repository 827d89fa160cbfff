import numpy as np
import pytest

from emoprune.features.pca import DescriptorPCA, fit_descriptor_pca
from emoprune.models.mlp import mlp


def test_pca_is_fit_on_the_training_rows_only():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 20))
    test = rng.normal(size=(10, 20)) + 100  # wildly different held-out data
    a = fit_descriptor_pca(train, 5)
    b = fit_descriptor_pca(np.vstack([train, test])[:50], 5)
    np.testing.assert_allclose(a.components, b.components)
    z = a.transform(train)
    assert z.shape == (50, 5)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, rtol=1e-6)  # whitened
    assert np.all(np.diff(a.explained_variance_ratio) <= 0)


def test_constant_columns_and_meta_round_trip():
    x = np.random.default_rng(1).normal(size=(30, 8))
    x[:, 3] = 7.0  # an LPQ bin that never fires
    pca = fit_descriptor_pca(x, 3)
    assert np.isfinite(pca.transform(x)).all()
    again = DescriptorPCA.from_meta(pca.to_meta())
    np.testing.assert_allclose(again.transform(x), pca.transform(x))


def test_too_many_components():
    with pytest.raises(ValueError, match="pca_components"):
        fit_descriptor_pca(np.zeros((4, 10)), 5)


def test_mlp_shape():
    import torch

    net = mlp(10, [32, 16], 7)
    assert net(torch.zeros(3, 10)).shape == (3, 7)
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in net) == 2


def test_pca_components_are_bounded_by_the_descriptor_and_the_smallest_training_part():
    from emoprune.errors import UserError
    from emoprune.training.recipes import check_pca_components

    descriptors = {"lpq": np.zeros((40, 6)), "phog": np.zeros((40, 30))}
    check_pca_components(6, descriptors, [30, 32])  # lpq's 6 values per frame: the bound
    with pytest.raises(UserError, match=r"must be <= 6 \(lpq: 6 values per frame; .*got 7"):
        check_pca_components(7, descriptors, [30, 32])
    with pytest.raises(UserError, match=r"must be <= 5 \(lpq: .* smallest training part: 5"):
        check_pca_components(6, descriptors, [5, 32])
