"""Shared by train_classifier.py and measure.py: data loading and the Frechet distance.

Preprocessing is the model's (models/train/ldm.py): Fashion-MNIST 28x28 scaled to [-1, 1] and
padded by 2 pixels of background (-1) to 32x32.
"""
import os
import sys
from typing import Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "train"))
import ldm  # noqa: E402  (the training program's data loading)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load_fashion_mnist(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images float32 [N, 1, 32, 32] in [-1, 1], labels int64 [N]: the training program's own
    loader (models/train/ldm.py), so that the judge sees exactly what the model was trained on."""
    x, y = ldm.load_fashion_mnist(split)
    return np.ascontiguousarray(x.numpy()), y.numpy()


def uint8_to_model(gray: np.ndarray) -> np.ndarray:
    """uint8 gray images [N, H, W] (0..255) -> float32 [N, 1, H, W] in [-1, 1]."""
    return (gray.astype(np.float32) / 127.5 - 1.0)[:, None]


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D].

    Tr(S1 + S2 - 2 (S1 S2)^1/2) is computed as Tr(S1) + Tr(S2) - 2 Tr((A S2 A)^1/2), A = S1^1/2,
    which only needs symmetric eigen-decompositions.
    """
    f1 = f1.astype(np.float64)
    f2 = f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1 = np.cov(f1, rowvar=False)
    s2 = np.cov(f2, rowvar=False)
    a = _sqrtm_psd(s1)
    covmean_tr = np.trace(_sqrtm_psd(a @ s2 @ a))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * covmean_tr)


def mean_pairwise_distance(f: np.ndarray) -> float:
    """Mean Euclidean distance between distinct rows: a spread (diversity) measure."""
    f = f.astype(np.float64)
    sq = (f ** 2).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0, None)
    n = f.shape[0]
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean()) if n > 1 else 0.0
