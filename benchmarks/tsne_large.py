"""Large-N t-SNE in its own process: one fit, its time, KL and the process's peak RSS.

``python -m benchmarks.tsne_large IMPL N THREADS [MAX_DENSE_BYTES]`` prints one JSON line.
IMPL is ``vaefast``, ``openTSNE-bh`` or ``openTSNE-fft``; MAX_DENSE_BYTES caps vaefast's P
(e.g. 4e9 keeps N = 50,000 sparse). The data are N latent means of the
shipped z20 encoder on mnist5k digits shifted by up to 2 pixels with Gaussian pixel
noise (sigma 0.05), seeded: real VAE means at sizes the 5,000 digits alone do not
reach. Encoding is not timed; for vaefast a fit of 300 points first loads the Numba
kernels.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


def augmented_means(n: int, seed: int = 0) -> np.ndarray:
    """[n, 20] float32 latent means of shifted, noisy mnist5k digits."""
    from benchmarks.conftest import EXPORTED
    from vaefast import data, runtime

    raw = data.load("mnist5k")
    images = np.concatenate([raw.X_train, raw.X_test]).reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), n)
    shifts = rng.integers(-2, 3, size=(n, 2))
    batch = np.stack([np.roll(images[k], tuple(s), axis=(0, 1)) for k, s in zip(pick, shifts)])
    batch = np.clip(batch + rng.normal(scale=0.05, size=batch.shape), 0.0, 1.0)
    vae = runtime.load(EXPORTED / "mnist5k-z20", providers="cpu")
    return vae.encode(batch.reshape(n, -1).astype(np.float32))[0]


def fit(impl: str, X: np.ndarray, threads: int, max_dense_bytes: int | None = None) -> dict:
    """Fit one implementation; seconds, KL and (vaefast) its phase times."""
    if impl == "vaefast":
        from vaefast.tsne import TSNE

        TSNE(random_state=0, n_jobs=threads).fit(X[:300])
        t0 = time.perf_counter()
        tsne = TSNE(random_state=0, n_jobs=threads, max_dense_bytes=max_dense_bytes).fit(X)
        return {
            "seconds": time.perf_counter() - t0,
            "kl": tsne.kl_divergence_,
            "affinities_s": tsne.timings_["affinities_s"],
            "optimize_s": tsne.timings_["optimize_s"],
            "p_storage": tsne.timings_["p_storage"],
            "p_gb": tsne.timings_["p_gb"],
            "pairs_per_s": tsne.timings_["pairs_per_s"],
        }
    if impl in ("openTSNE-bh", "openTSNE-fft"):
        import openTSNE

        t0 = time.perf_counter()
        emb = openTSNE.TSNE(
            negative_gradient_method=impl.split("-")[1],
            n_jobs=threads,
            random_state=0,
            verbose=False,
        ).fit(X)
        return {"seconds": time.perf_counter() - t0, "kl": float(emb.kl_divergence)}
    raise SystemExit(f"unknown implementation {impl!r}")


def main(argv: list[str]) -> None:
    impl, n, threads = argv[0], int(argv[1]), int(argv[2])
    X = augmented_means(n)
    out = fit(impl, X, threads, int(float(argv[3])) if len(argv) > 3 else None)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
