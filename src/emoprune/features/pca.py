"""The paper's "PCA" inputs, fit on a training fold only: the top components of each descriptor.

The original course work fit its PCA on all 675 images, so the held-out images shaped the
features; here the scaler and PCA see only the training part of each fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler


@dataclass
class DescriptorPCA:
    """Standardise, then project on the top principal components (whitened to unit variance)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), already divided by sqrt(explained variance): whitened
    pca_mean: np.ndarray  # (D,)
    explained_variance_ratio: np.ndarray  # (k,)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, D) descriptors -> (N, k) component scores."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return (z - self.pca_mean) @ self.components.T

    def to_meta(self) -> dict[str, list]:
        return {k: v.tolist() for k, v in vars(self).items()}

    @classmethod
    def from_meta(cls, meta: dict[str, list]) -> DescriptorPCA:
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in meta.items()})


def fit_descriptor_pca(x_train: np.ndarray, n_components: int, seed: int = 0) -> DescriptorPCA:
    """Fit StandardScaler + PCA(n_components, whiten) on training descriptors (N, D)."""
    n, d = x_train.shape
    if n_components > min(n, d):
        raise ValueError(f"pca_components={n_components} exceeds min(n_train={n}, dim={d})")
    scaler = StandardScaler().fit(x_train)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)  # constant bins stay 0, not NaN
    z = (x_train - scaler.mean_) / scale
    pca = PCA(n_components=n_components, whiten=True, random_state=seed).fit(z)
    components = pca.components_ / np.sqrt(pca.explained_variance_)[:, None]
    return DescriptorPCA(scaler.mean_, scale, components, pca.mean_, pca.explained_variance_ratio_)
