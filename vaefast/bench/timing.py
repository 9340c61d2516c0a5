"""One candidate runtime timed in its own process (``bench recommend``'s measurement):
``python -m vaefast.bench.timing SPEC_JSON`` loads the model as the spec says, times the call
users make at each batch (median of 7 samples of at least ``min_time / 7`` s), saves its
outputs on the seeded agreement batch and prints ``{batch: seconds}`` as JSON.

``inputs`` is the seeded batch every timed runtime gets, here and in the benchmark
workers (``benchmarks/worker.py``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import numpy as np

SAMPLES = 7


def inputs(part: str, batch: int, input_shape, latent_shape, seed: int) -> np.ndarray:
    """Seeded inputs of one half: pixels in [0, 1] for the encoder, z ~ N(0, I) of the
    model's latent shape for the decoder."""
    rng = np.random.default_rng(seed)
    if part == "encoder":
        return rng.random((batch, *input_shape), dtype=np.float32)
    return rng.standard_normal((batch, *latent_shape), dtype=np.float32)


def median_seconds(call: Callable[[np.ndarray], object], x: np.ndarray, min_time: float) -> float:
    """Median seconds of ``call(x)`` after a warm-up call, over SAMPLES samples of as many
    calls as fill ``min_time / SAMPLES`` seconds."""
    call(x)
    once = time.perf_counter()
    call(x)
    once = time.perf_counter() - once
    loops = max(1, int(min_time / SAMPLES / max(once, 1e-7)))
    samples = []
    for _ in range(SAMPLES):
        t0 = time.perf_counter()
        for _ in range(loops):
            call(x)
        samples.append((time.perf_counter() - t0) / loops)
    return sorted(samples)[SAMPLES // 2]


def _call(spec: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The call users make for the spec's engine and half: the eager model's own
    ``encode``/``decode``, or ``vaefast.runtime``'s."""
    part, threads = spec["part"], spec["threads"]
    if spec["engine"] == "eager":
        import torch

        from vaefast.export import load_eager

        torch.set_num_threads(threads)
        model = load_eager(spec["exported"])
        run = model.encode if part == "encoder" else model.decode

        def eager(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = run(torch.from_numpy(x))
            return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

        return eager
    from vaefast import runtime

    vae = runtime.load(
        spec["exported"],
        providers=spec["providers"],
        threads=threads,
        variant=spec["variant"],
        precision=spec["precision"],
    )
    if part == "encoder":
        return lambda x: vae.encode(x, batch_size=len(x))[0]
    return lambda x: vae.decode(x, batch_size=len(x))


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    call = _call(spec)
    shapes = spec["part"], spec["input_shape"], spec["latent_shape"]
    seconds = {
        n: median_seconds(call, inputs(shapes[0], n, *shapes[1:], 0), spec["min_time"])
        for n in spec["batches"]
    }
    out = call(inputs(shapes[0], spec["agreement_rows"], *shapes[1:], 1))
    np.save(spec["outputs"], np.asarray(out, np.float32))
    print(json.dumps(seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
