"""A benchmark worker: one runtime in its own process, configured as users deploy it.

``python -m benchmarks.worker KIND MODEL_DIR THREADS [MODULE]`` reads JSON commands on
stdin and answers on stdout, one line each:

- ``{"part": "encoder"|"decoder", "batch": B, "calls": C, "seed": S}`` -> the C call
  durations in seconds (each call timed alone, after one warm-up call) and the first
  output row, for agreement checks;
- ``{"quit": true}``.

Kinds: ``eager`` (PyTorch, ``torch.inference_mode()``, ``torch.set_num_threads``),
``runtime-VARIANT`` (``vaefast.runtime.load(...).encode/decode``: the API users call),
``session-VARIANT`` (a bare ``onnxruntime.InferenceSession.run``, to show the wrapper's
cost), ``runtime-cuda`` and ``runtime-tensorrt``. ONNX Runtime workers never import torch
and keep ONNX Runtime's thread spinning on, its default.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def inputs(part: str, batch: int, input_shape, latent_shape, seed: int) -> np.ndarray:
    """The seeded inputs every worker gets: pixels in [0, 1] or z ~ N(0, I) of the
    model's latent shape."""
    rng = np.random.default_rng(seed)
    if part == "encoder":
        return rng.random((batch, *input_shape), dtype=np.float32)
    return rng.standard_normal((batch, *latent_shape), dtype=np.float32)


def _runner(kind: str, folder: Path, threads: int, module: str | None):
    from vaefast import runtime

    meta = runtime.read_model_json(folder)
    shape, z = runtime.input_shape(meta), runtime.latent_shape(meta)
    family, _, variant = kind.partition("-")
    if family == "eager":
        import torch

        from benchmarks.eager import eager_halves

        torch.set_num_threads(threads)
        enc, dec = eager_halves(folder, module)

        def run(part: str, x: np.ndarray):
            with torch.inference_mode():
                out = (enc if part == "encoder" else dec)(torch.from_numpy(x))
            return out[0].numpy() if isinstance(out, tuple) else out.numpy()
    elif family == "runtime":
        providers = variant if variant in ("cuda", "tensorrt") else "cpu"
        vae = runtime.load(folder, providers=providers, threads=threads,
                           variant="fp32" if providers != "cpu" else variant)

        def run(part: str, x: np.ndarray):
            if part == "encoder":
                return vae.encode(x, batch_size=len(x))[0]
            return vae.decode(x, batch_size=len(x))
    elif family == "session":
        import onnxruntime as ort

        from vaefast.variants import model_files

        options = runtime.session_options(threads, spin=True)
        sessions = {part: ort.InferenceSession(str(folder / name), options,
                                               providers=["CPUExecutionProvider"])
                    for part, name in zip(("encoder", "decoder"), model_files(variant))}

        def run(part: str, x: np.ndarray):
            return sessions[part].run(None, {"x" if part == "encoder" else "z": x})[0]
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    return run, shape, z


def main(argv: list[str]) -> None:
    kind, folder, threads = argv[0], Path(argv[1]), int(argv[2])
    run, shape, z = _runner(kind, folder, threads, argv[3] if len(argv) > 3 else None)
    print(json.dumps({"ready": kind}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        x = inputs(cmd["part"], cmd["batch"], shape, z, cmd.get("seed", 0))
        out = run(cmd["part"], x)  # warm-up
        times = []
        for _ in range(cmd["calls"]):
            t0 = time.perf_counter()
            out = run(cmd["part"], x)
            times.append(time.perf_counter() - t0)
        head = np.asarray(out[0], np.float64).ravel()[:64].tolist()
        print(json.dumps({"times": times, "head": head}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
