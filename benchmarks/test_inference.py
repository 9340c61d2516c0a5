"""Exported runtimes vs eager PyTorch: latency per batch size and agreement.

Same thread count for torch and ONNX Runtime; ONNX Runtime's spinning threads are off
because torch runs in the same process (an in-process comparison); pytest-benchmark warms
up before timing. The shipped models are benchmarked with their eager twin rebuilt from
the ONNX weights; your own exports join with
``VAEFAST_BENCH_MODELS=DIR=FILE.py:FUNCTION@WEIGHTS[,...]`` (eager built by your module).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import EXPORTED, THREADS, timed_median

BATCHES = [1, 64, 1024, 4096, 8192]
RUNTIMES = ["eager", "ort-fp32", "ort-int8", "ort-cuda", "ort-tensorrt"]
MODELS = {"z20": (EXPORTED / "mnist5k-z20", None), "z2": (EXPORTED / "mnist5k-z2", None),
          "conv-z16": (EXPORTED / "mnist5k-conv-z16", None)}
for _entry in filter(None, os.environ.get("VAEFAST_BENCH_MODELS", "").split(",")):
    _folder, _, _module = _entry.partition("=")
    MODELS[Path(_folder).name] = (Path(_folder), _module or None)


def _eager(folder: Path, module: str | None):
    """The eager encoder and decoder (outputs as the exported graph gives them)."""
    from vaefast import runtime
    from vaefast.export import halves, load_eager, load_module

    meta = runtime.read_model_json(folder)
    if module:
        target, _, weights = module.partition("@")
        model = load_module(target, weights or None)
    else:
        model = load_eager(folder)
    enc, dec, _, _ = halves(model, None, None, runtime.input_shape(meta),
                            meta.get("decoder_output", "probs"))
    return enc, dec


@pytest.fixture(scope="module", params=list(MODELS))
def models(request):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    import onnxruntime as ort

    from vaefast import runtime

    folder, module = MODELS[request.param]
    out = {"name": request.param, "eager": _eager(folder, module),
           "ort-fp32": runtime.load(folder, providers="cpu", threads=THREADS, spin=False),
           "ort-int8": runtime.load(folder, providers="cpu", threads=THREADS, spin=False,
                                    variant="int8")}
    for kind, provider in (("ort-cuda", "cuda"), ("ort-tensorrt", "tensorrt")):
        if runtime.PROVIDERS[provider] in ort.get_available_providers():
            try:
                out[kind] = runtime.load(folder, providers=provider)
            except Exception:  # the build has the provider but no usable GPU
                pass
    return out


def _inputs(batch: int, shape: tuple[int, ...], pixels: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((batch, *shape), dtype=np.float32) if pixels else \
        rng.standard_normal((batch, *shape), dtype=np.float32)


def _callable(models, kind: str, part: str):
    import torch

    if kind == "eager":
        fn = models["eager"][0 if part == "encoder" else 1]

        def run(x):
            with torch.inference_mode():
                out = fn(torch.from_numpy(x))
            return tuple(t.numpy() for t in out) if isinstance(out, tuple) else (out.numpy(),)
        return run
    vae = models[kind]
    if part == "encoder":
        return lambda x: vae.encode(x, batch_size=len(x))
    return lambda z: (vae.decode(z, batch_size=len(z)),)


# kind varies fastest: the runtimes compared at one batch size run back to back, so slow
# drifts in this shared machine's load do not bias one runtime against another
@pytest.mark.parametrize("kind", RUNTIMES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_latency(benchmark, models, part, kind, batch):
    if kind not in models:
        pytest.skip(f"{kind} not available here")
    vae = models["ort-fp32"]
    x = _inputs(batch, vae.input_shape if part == "encoder" else (vae.latent_dim,),
                part == "encoder")
    run = _callable(models, kind, part)
    reference = _callable(models, "eager", part)(x)
    benchmark.group = f"{models['name']} {part} batch={batch}"
    benchmark.extra_info.update(model=models["name"], part=part, runtime=kind, batch=batch,
                                threads=THREADS)
    got = benchmark(run, x)
    err = max(float(np.abs(g - r).max()) for g, r in zip(got, reference))
    benchmark.extra_info["max_abs_error_vs_eager"] = err
    median = timed_median(benchmark)
    if median:
        benchmark.extra_info["rows_per_s"] = batch / median
    scale = max(float(np.abs(r).max()) for r in reference)
    limit = {"eager": 1e-5, "ort-fp32": 1e-5, "ort-int8": 0.1 * scale}.get(kind, 1e-4)
    assert err <= limit, (kind, err, limit)


@pytest.mark.parametrize("kind", ["ort-fp32", "ort-int8"])
def test_encoder_agreement_on_test_split(models, mnist_test, kind):
    """fp32 within 1e-5 of eager; int8 keeps kNN@10 overlap >= 0.9 (mnist5k test split)."""
    import torch

    from vaefast.metrics import knn_overlap

    from vaefast.errors import VaefastError

    try:
        X = models["ort-fp32"].check_inputs(mnist_test)
    except VaefastError:
        pytest.skip(f"{models['name']} does not take mnist5k images")
    with torch.inference_mode():
        eager_mu = models["eager"][0](torch.from_numpy(np.ascontiguousarray(X)))[0].numpy()
    mu = models[kind].encode(X)[0]
    if kind == "ort-fp32":
        assert float(np.abs(mu - eager_mu).max()) <= 1e-5
    else:
        assert knn_overlap(mu, eager_mu, 10) >= 0.9
