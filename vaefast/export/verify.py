"""Verification against eager PyTorch: the fp32 ONNX files on the example, on random
batches up to the runtime's default batch (sized here, by compute and memory) and at a
second size, each side in batches fitted to the memory budget; the exporters tried in
order until one's graph agrees."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.runtime import engines, manifest, memory
from vaefast import runtime
from vaefast.runtime import variants as variants_mod
from vaefast.errors import VaefastError, first_line
from vaefast.metrics import knn_overlap, max_errors
from vaefast.export.adapt import Probe
from vaefast.export.report import CPU
from vaefast.export.trace import EXPORTERS, _export_onnx

# fp32 error allowed between eager and ONNX Runtime, per tensor: max abs error over
# max(1, the eager tensor's largest magnitude) (``max_scaled``)
TOLERANCE = 1e-5


LARGE_LATENT = 1000  # latents of more values than this (spatial ones) get


LARGE_LATENT_TOLERANCE = 1e-4  # this tolerance: deeper conv stacks sum in another order


CHECK_BATCHES = (1, 7, 256)  # random batches checked, with the runtime's default batch


# the runtime's default batch: one call at least this long, so per-call costs vanish, and no
# longer (larger batches of a conv VAE were no faster here, and cost memory and checking)
CALL_SECONDS = 0.05


def _export_verified(
    enc, dec, x, folder: Path, meta: dict, probe: Probe, known: dict, seed, steps, tolerance
) -> dict[str, Any]:
    """Both halves exported to fp32 ONNX in ``folder`` (with model.json), and their
    verification (``_verify_fp32``). TorchScript's exporter first: its trace takes ~1 s
    where torch.export's takes ~5 s a half. Where it fails, or its graph disagrees with
    eager beyond ``tolerance`` anywhere the verification looks (every batch and size
    checked), torch.export's (dynamo), verified the same way; the report's ``exporter``
    says which made the files, and ``exporter_fallback`` why TorchScript's did not."""
    dynamic_size = probe.multiple is not None
    fallback = None
    for exporter in EXPORTERS:
        try:
            _export_onnx(enc, dec, x, folder, meta, dynamic_size, exporter, known)
            manifest.write_model_json(folder, meta)
            fp32 = _verify_fp32(enc, dec, folder, x.numpy(), seed, probe, steps)
        except VaefastError:
            raise
        except Exception as e:
            why = f"{type(e).__name__}: {first_line(e)[:200]}"
            if exporter == EXPORTERS[-1]:  # e.g. a graph whose batch the model's code fixed
                raise VaefastError(
                    f"the exported model fails in ONNX Runtime ({why}); before it, {fallback}"
                ) from None
            fallback = f"{exporter}: {why}"
            continue
        if fp32["max_scaled"] <= tolerance or exporter == EXPORTERS[-1]:
            return fp32 | {"exporter": exporter, "exporter_fallback": fallback}
        fallback = f"{exporter}: error {fp32['max_scaled']:.3g} over {tolerance:g}"
    raise AssertionError("unreachable: the last exporter returns or raises")


def _random_inputs(rng: np.random.Generator, b: int, shape, input_range) -> np.ndarray:
    """``b`` uniform random inputs of ``shape`` in the model's own pixel range."""
    lo, hi = input_range
    return rng.random((b, *shape), dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)


def _eager(enc, dec):
    """(mu, logvar, x_hat) of the eager halves on x, decoding z where given (else mu)."""
    import torch

    def run(x: np.ndarray, z: np.ndarray | None):
        with torch.no_grad():
            mu, logvar = (t.numpy() for t in enc(torch.from_numpy(x)))
            return mu, logvar, dec(torch.from_numpy(mu if z is None else z)).numpy()

    return run


def _checked_batches(batch_rows: int) -> list[int]:
    """The random batch sizes the fp32 verification runs for a model whose runtime batch
    (``ExportedVAE.batch_rows``, at most 4,096) is ``batch_rows``: 1, 7, 256 where the
    runtime's batch is larger, and the runtime's batch itself — what users run by
    default, and no larger (a conv model's 4,096 rows would cost more than its export)."""
    return sorted({b for b in CHECK_BATCHES if b <= 7 or b < batch_rows} | {batch_rows})


def _runtime_batch(call: Callable[[int], Any], memory_rows: int) -> int:
    """The runtime's default batch (recorded in model.json, and verified): the memory
    rule's ``memory_rows``, but no more rows than ONNX Runtime runs in ~CALL_SECONDS
    here (timed on a second call of up to 64 rows), and at least the largest of
    CHECK_BATCHES, in powers of two."""
    import time

    b = min(memory_rows, 64)
    call(b)  # the first run allocates
    t0 = time.perf_counter()
    call(b)
    rows = CALL_SECONDS * b / max(time.perf_counter() - t0, 1e-9)
    floor = max(CHECK_BATCHES[-1], 2 ** int(math.log2(max(rows, 1))))
    return int(min(memory_rows, floor))


def _eager_on_random(enc, dec, input_shape, input_range) -> Callable[[int], Any]:
    """``call(b)``: the eager halves on ``b`` random inputs (what memory fitting runs)."""
    run, rng = _eager(enc, dec), np.random.default_rng(0)
    return lambda b: run(_random_inputs(rng, b, input_shape, input_range), None)


def _eager_fits_one_row(enc, dec, input_shape, input_range, steps) -> None:
    """Refuse, before anything is exported, a budget that even one row of eager
    verification exceeds: a failure in seconds, not after the export."""
    call = _eager_on_random(enc, dec, input_shape, input_range)
    memory.fit_batch(call, 1, steps.budget, "eager verification")


def _verify_fp32(
    enc,
    dec,
    folder: Path,
    X: np.ndarray,
    seed: int,
    probe: Probe,
    steps: memory.Steps,
) -> dict[str, Any]:
    """ONNX Runtime against eager on the example, on random batches up to the runtime's
    default batch (``_checked_batches``), and (fully convolutional models) at a second
    image size; inputs in the model's own range, fed to the bare sessions. Each side
    runs in batches fitted to the memory budget (``vaefast.runtime.memory.fit_batch``), each
    recorded with its peak RSS; ONNX Runtime's cost per row, measured first, decides the
    runtime's batch and so the random batches checked."""
    vae = runtime.load(folder, providers=CPU, spin=False)
    rng = np.random.default_rng(seed)

    def inputs(b: int, shape=None) -> np.ndarray:
        return _random_inputs(rng, b, shape or vae.input_shape, vae.input_range)

    # bare sessions without ONNX Runtime's arena: what a batch needs is what is measured,
    # and it is given back after each run
    options = engines.session_options(spin=False, arena=False)
    encoder, decoder = (
        engines.cpu_session(folder / name, options)
        for name in variants_mod.model_files(variants_mod.REFERENCE)
    )

    def onnx(x: np.ndarray, z: np.ndarray):
        mu, logvar = encoder.run(None, {"x": x})
        return mu, logvar, decoder.run(None, {"z": z})[0]

    def onnx_on_random(b: int):
        return onnx(inputs(b), rng.standard_normal((b, *vae.latent_shape), np.float32))

    cost = memory.row_cost(onnx_on_random, steps.budget, "ONNX Runtime verification")
    batch_rows = _runtime_batch(onnx_on_random, runtime.default_batch_rows(cost[1]))
    cases = [("test_split", np.ascontiguousarray(X, np.float32), None)]
    for b in _checked_batches(batch_rows):
        cases.append(
            (str(b), inputs(b), rng.standard_normal((b, *vae.latent_shape), dtype=np.float32))
        )
    if probe.second_size is not None:
        cases.append(("second_size", inputs(2, (vae.input_shape[0], *probe.second_size)), None))
    most = max(len(x) for _, x, _ in cases[1:])  # the example's eager outputs are the probe's
    eager = _eager(enc, dec)

    def sliced(run, x, z, batch):  # (mu, logvar, x_hat) of x (and z) in slices
        parts = [
            run(x[s : s + batch], None if z is None else z[s : s + batch])
            for s in range(0, len(x), batch)
        ]
        return [np.concatenate(p) for p in zip(*parts)]

    memory.trim()
    batch = memory.fit_batch(
        _eager_on_random(enc, dec, vae.input_shape, vae.input_range),
        most,
        steps.budget,
        "eager verification",
    )[0]
    with steps.measure("eager verify", batch=batch):
        theirs = [list(probe.outputs)] + [sliced(eager, x, z, batch) for _, x, z in cases[1:]]
    memory.trim()
    batch_onnx, per_row = memory.fit_batch(
        onnx_on_random, most, steps.budget, "ONNX Runtime verification", cost=cost
    )
    with steps.measure("onnx verify", batch=batch_onnx):
        ours = [
            sliced(onnx, x, theirs[k][0] if z is None else z, batch_onnx)
            for k, (_, x, z) in enumerate(cases)
        ]
    result = _fp32_errors(cases, theirs, ours, probe)
    return result | {
        "providers": vae.providers,
        "batch_rows": batch_onnx,
        "onnx_bytes_per_row": per_row,
        "runtime_batch_rows": batch_rows,
    }


def _fp32_errors(cases, theirs, ours, probe: Probe) -> dict[str, Any]:
    """The fp32 verification's figures: each case's max errors of mu, logvar and x_hat
    (ONNX Runtime ``ours`` against eager ``theirs``), kNN@10 overlap on the example,
    and the worst over all cases."""
    result: dict[str, Any] = {"random": {}}
    for (name, x, _), (mu, logvar, x_hat), (o_mu, o_logvar, o_x_hat) in zip(cases, theirs, ours):
        errors = {
            "n": len(x),
            "mu": max_errors(o_mu, mu),
            "logvar": max_errors(o_logvar, logvar),
            "x_hat": max_errors(o_x_hat, x_hat),
        }
        if name == "test_split":
            flat = (len(x), -1)
            errors["knn10_overlap"] = knn_overlap(
                o_mu.reshape(flat), mu.reshape(flat), min(10, len(x) - 1)
            )
            result["test_split"] = errors
        elif name == "second_size":
            result["second_size"] = errors | {"size": list(probe.second_size)}
        else:
            result["random"][name] = errors
    parts = [result["test_split"], *result["random"].values()] + (
        [result["second_size"]] if "second_size" in result else []
    )
    tensors = [p[k] for p in parts for k in ("mu", "logvar", "x_hat")]
    return result | {
        key: max(t[key] for t in tensors) for key in ("max_abs", "max_rel", "max_scaled")
    }
