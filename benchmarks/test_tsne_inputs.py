"""Exact t-SNE on the inputs people also feed it, side by side with the references:

- P (affinities) of raw mnist5k pixels (D = 784) and of 4,096-D inputs (the digits
  upsampled to 64 x 64, the size of a flattened 4 x 32 x 32 spatial latent), N = 5,000:
  vaefast (BLAS GEMM blocks) vs scikit-learn's exact path (``pairwise_distances`` +
  ``_joint_probabilities``), with P's parity (max relative error) recorded;
- a whole fit on raw pixels (N = 2,000, D = 784) vs scikit-learn exact, final KL beside;
- ``transform`` of 3,000 new points into a 10,000-point reference map of VAE means:
  vaefast's exact placement vs openTSNE's ``TSNEEmbedding.transform`` on the same
  reference points.

Under ``make test`` each runs once on small inputs as a correctness check.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.conftest import SLOW_ROUNDS, THREADS

_SKLEARN_P: dict[tuple, np.ndarray] = {}


@pytest.fixture(scope="module")
def pixels():
    """mnist5k pixels as float32 in [0, 1], [5000, 784]."""
    from vaefast import data

    raw = data.read("mnist5k")
    return (raw.X / np.float32(raw.scale)).astype(np.float32).reshape(len(raw.X), -1)


def inputs(pixels: np.ndarray, features: int, n: int) -> np.ndarray:
    X = pixels[:n]
    if features == 784:
        return X
    side = int(np.sqrt(features))  # 64: each pixel repeated 2.3x2.3 by nearest upsampling
    rows = (np.arange(side) * 28) // side
    return np.ascontiguousarray(X.reshape(n, 28, 28)[:, rows][:, :, rows].reshape(n, -1))


def sklearn_p(X: np.ndarray) -> np.ndarray:
    from sklearn.manifold._t_sne import _joint_probabilities
    from sklearn.metrics import pairwise_distances

    return _joint_probabilities(pairwise_distances(X, squared=True), 30.0, 0)


def vaefast_p(X: np.ndarray) -> np.ndarray:
    from vaefast.tsne import joint_probabilities

    return joint_probabilities(X, 30.0, n_jobs=THREADS).P


@pytest.mark.parametrize("features", [784, 4096])
@pytest.mark.parametrize("impl", ["vaefast", "sklearn"])
def test_affinities(benchmark, pixels, impl, features):
    from threadpoolctl import threadpool_limits

    n = 300 if benchmark.disabled else 5000
    X = inputs(pixels, features, n)
    run = vaefast_p if impl == "vaefast" else sklearn_p
    benchmark.group = f"tsne P N={n} D={features}"
    with threadpool_limits(limits=THREADS):
        run(X[:200])  # warm-up (Numba's kernels load)
        P = benchmark.pedantic(
            run, args=(X,), rounds=1 if benchmark.disabled else SLOW_ROUNDS, iterations=1
        )
        key = (n, features)
        if key not in _SKLEARN_P:
            _SKLEARN_P[key] = P if impl == "sklearn" else sklearn_p(X)
    ref = _SKLEARN_P[key]
    rel = float(np.max(np.abs(P - ref) / ref))
    benchmark.extra_info.update(
        impl=impl, n=n, features=features, threads=THREADS, max_rel_error_vs_sklearn=rel
    )
    assert rel <= 1e-6


@pytest.mark.parametrize("data", ["mnist5k-pixels", "digits"])
@pytest.mark.parametrize("impl", ["vaefast", "sklearn-exact"])
def test_fit_on_raw_pixels(benchmark, pixels, impl, data):
    from sklearn.manifold import TSNE as SklearnTSNE

    from vaefast.tsne import TSNE

    n = 300 if benchmark.disabled else 2000
    if data == "digits":
        from vaefast.data import read

        X = read("digits").X[:n].astype(np.float32)
    else:
        X = pixels[:n]
    make = (
        (lambda: TSNE(random_state=0, n_jobs=THREADS))
        if impl == "vaefast"
        else (lambda: SklearnTSNE(method="exact", random_state=0, n_jobs=THREADS))
    )
    if impl == "vaefast":
        make().fit(X[:200])  # kernels loaded
    benchmark.group = f"tsne {data} N={len(X)} D={X.shape[1]}"
    rounds = (
        1 if benchmark.disabled else (SLOW_ROUNDS if impl == "vaefast" else min(SLOW_ROUNDS, 3))
    )
    tsne = benchmark.pedantic(lambda: make().fit(X), rounds=rounds, iterations=1)
    benchmark.extra_info.update(
        impl=impl, n=len(X), features=X.shape[1], threads=THREADS, kl=float(tsne.kl_divergence_)
    )
    assert np.isfinite(tsne.embedding_).all()


@pytest.fixture(scope="module")
def reference_map(request):
    """10,000 augmented VAE means as the reference, 3,000 more to place (a tenth of both
    under make test), and vaefast's exact map of the reference."""
    from benchmarks.tsne_large import augmented_means
    from vaefast.tsne import TSNE

    scale = 10 if request.config.getoption("benchmark_disable") else 1
    n_ref, n_new = 10_000 // scale, 3_000 // scale
    X = augmented_means(n_ref + n_new, seed=3)
    return X[:n_ref], X[n_ref:], TSNE(random_state=0, n_jobs=THREADS).fit(X[:n_ref])


@pytest.mark.parametrize("impl", ["vaefast", "vaefast-interpolated", "openTSNE"])
def test_transform(benchmark, reference_map, impl):
    ref, new, tsne = reference_map
    exact = None
    if impl == "vaefast":
        tsne.transform(new[:20])  # kernels loaded
        place = tsne.transform
    elif impl == "vaefast-interpolated":
        exact = tsne.transform(new)  # what the placement is measured against (not timed)

        def place(X):
            return tsne.transform(X, method="interpolated")

        place(new[:20])
    else:
        openTSNE = pytest.importorskip("openTSNE")
        from openTSNE import TSNEEmbedding, affinity

        aff = affinity.PerplexityBasedNN(
            ref, perplexity=30, n_jobs=THREADS, random_state=0, verbose=False
        )
        emb = TSNEEmbedding(
            tsne.embedding_.astype(np.float64), aff, n_jobs=THREADS, random_state=0, verbose=False
        )
        emb.transform(new[:20])
        place = emb.transform
        assert openTSNE  # the real package, placing into the same reference map
    benchmark.group = f"tsne transform into {len(ref)} reference points"
    t0 = time.perf_counter()
    Y = benchmark.pedantic(
        lambda: np.asarray(place(new)), rounds=1 if benchmark.disabled else 3, iterations=1
    )
    seconds = (time.perf_counter() - t0) / (1 if benchmark.disabled else 3)
    benchmark.extra_info.update(
        impl=impl,
        reference=len(ref),
        placed=len(new),
        threads=THREADS,
        points_per_s=len(new) / seconds,
    )
    assert Y.shape == (len(new), 2) and np.isfinite(Y).all()
    if exact is not None:  # displacement from the exact placement, as a fraction of the map
        shift = np.linalg.norm(Y - exact, axis=1) / np.ptp(tsne.embedding_, axis=0).max()
        benchmark.extra_info.update(
            displacement_median=float(np.median(shift)),
            displacement_p90=float(np.percentile(shift, 90)),
            displacement_max=float(shift.max()),
        )
        assert np.median(shift) < 0.01
