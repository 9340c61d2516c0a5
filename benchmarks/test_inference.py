"""Exported runtimes vs eager PyTorch, each in its own process as users deploy it.

Every runtime runs in a worker process (``benchmarks/worker.py``): eager PyTorch with
``torch.inference_mode()`` and THREADS threads; ONNX Runtime through ``vaefast.runtime``
(the API users call) and as a bare ``session.run`` (to show the wrapper's own cost), with
THREADS threads, spinning on, no torch loaded.

The rule: for each (model, part, batch) every runtime gets the same ROUNDS rounds of the
same number of calls, sized so that the fastest runtime's round takes ROUND_SECONDS. A round
is timed by pytest-benchmark (``pedantic``: its stats are seconds per round, so runtimes of
one group compare directly, ``pytest-benchmark compare`` included) and each call inside it
by the worker; extra_info holds the calls per round, the per-call p50 and p99, the ratio to
eager (median and quartiles over rounds) and the contention while the rounds ran.

The shipped models are compared with their eager twin rebuilt from the ONNX weights; your
own exports join with ``VAEFAST_BENCH_MODELS=DIR=FILE.py:FUNCTION@WEIGHTS[,...]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import EXPORTED, THREADS, ratio_spread, worker_rounds
from benchmarks.worker import Worker, available

BATCHES = [1, 64, 1024, 4096, 8192]
SMOKE_BATCH = 1024  # make test's smoke run checks agreement up to this batch
SMOKE_SKIPS = "z2"  # the smoke run's one repeat of an architecture
KINDS = [
    "eager",
    "eager-bf16",
    "eager-compile",
    "runtime-fp32",
    "runtime-int8",
    "session-fp32",
    "session-int8",
    "openvino-bf16",
    "openvino-f32",
    "runtime-cuda",
]
ROUNDS = int(os.environ.get("VAEFAST_BENCH_ROUNDS", "7"))
ROUND_SECONDS = 0.05  # target length of one round of one runtime
MODELS = {
    "z20": (EXPORTED / "mnist5k-z20", None),
    "z2": (EXPORTED / "mnist5k-z2", None),
    "conv-z16": (EXPORTED / "mnist5k-conv-z16", None),
}
for _entry in filter(None, os.environ.get("VAEFAST_BENCH_MODELS", "").split(",")):
    _folder, _, _module = _entry.partition("=")
    MODELS[Path(_folder).name] = (Path(_folder), _module or None)


@pytest.fixture(scope="module", params=list(MODELS))
def workers(request):
    pytest.importorskip("torch")
    folder, module = MODELS[request.param]
    disabled = request.config.getoption("benchmark_disable", False)
    if disabled and request.param == SMOKE_SKIPS:
        pytest.skip("z20's architecture with Z=2: timed only under make bench")
    pool = {}
    for kind in KINDS:
        if kind == "eager-compile" and disabled:
            continue  # compiling every (part, batch) takes minutes: timed runs only
        if available(kind):
            try:
                pool[kind] = Worker(kind, folder, module, THREADS)
            except RuntimeError as e:  # e.g. a CUDA build without a usable GPU
                if kind == "eager" or not kind.endswith(("cuda", "tensorrt")):
                    raise
                print(f"skipping {kind}: {e}")
    yield {"name": request.param, "pool": pool, "results": {}}
    for worker in pool.values():
        worker.close()


def prepare(workers: dict, part: str, batch: int, timed: bool) -> dict:
    """Warm every runtime on (part, batch), keep its first output row, and size the group's
    rounds from the fastest; cached per module."""
    key = (part, batch)
    if key not in workers["results"]:
        first = {k: w.time(part, batch, 1) for k, w in workers["pool"].items()}
        fastest = min(min(r["times"]) for r in first.values())
        workers["results"][key] = {
            "heads": {k: r["head"] for k, r in first.items()},
            "calls": max(1, int(ROUND_SECONDS / max(fastest, 1e-6))) if timed else 1,
            "rounds": {},
        }
    return workers["results"][key]


# kind varies fastest: a (part, batch) group is prepared once for all runtimes, eager first
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_latency(benchmark, workers, part, batch, kind):
    if kind not in workers["pool"]:
        pytest.skip(f"{kind} not available here")
    if benchmark.disabled and batch > SMOKE_BATCH:
        pytest.skip("large batches only under make bench (export verified them already)")
    timed = not benchmark.disabled
    group = prepare(workers, part, batch, timed)
    head, reference = np.array(group["heads"][kind]), np.array(group["heads"]["eager"])
    err = float(np.abs(head - reference).max())
    scale = float(np.abs(reference).max())
    limit = {
        "eager": 0.0,
        "runtime-fp32": 1e-5,
        "session-fp32": 1e-5,
        "openvino-f32": 1e-4,
        "eager-compile": 1e-4,
    }.get(kind, 0.1 * scale if ("int8" in kind or "bf16" in kind) else 1e-4)
    assert err <= limit, (kind, err, limit)
    benchmark.group = f"{workers['name']} {part} batch={batch}"
    benchmark.extra_info.update(
        model=workers["name"],
        part=part,
        runtime=kind,
        batch=batch,
        threads=THREADS,
        process_isolated=True,
        max_abs_error_vs_eager=err,
        calls_per_round=group["calls"],
    )
    worker, calls = workers["pool"][kind], group["calls"]
    rounds = worker_rounds(benchmark, worker, calls, ROUNDS if timed else 1)
    if not timed:
        return
    group["rounds"][kind] = [float(np.median(r)) for r in rounds]
    samples = [t for r in rounds for t in r]
    benchmark.extra_info.update(
        p50_s=float(np.percentile(samples, 50)),
        p99_s=float(np.percentile(samples, 99)),
        rows_per_s=batch / float(np.median(samples)),
    )
    if kind != "eager" and "eager" in group["rounds"]:
        benchmark.extra_info["speedup_vs_eager"] = ratio_spread(
            group["rounds"]["eager"], group["rounds"][kind]
        )


@pytest.mark.parametrize("variant", ["fp32", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_encoder_agreement_on_test_split(mnist_test, name, variant):
    """fp32 within 1e-5 of eager; int8 keeps kNN@10 overlap >= 0.9 (mnist5k test split).
    In one process: an agreement check, not a timing."""
    torch = pytest.importorskip("torch")
    from benchmarks.eager import eager_calls
    from vaefast import runtime
    from vaefast.errors import VaefastError
    from vaefast.metrics import knn_overlap

    folder, module = MODELS[name]
    vae = runtime.load(folder, providers="cpu", variant=variant, spin=False)
    try:
        X = np.ascontiguousarray(vae.check_inputs(mnist_test))
    except VaefastError:
        pytest.skip(f"{name} does not take mnist5k images")
    with torch.inference_mode():
        eager_mu = eager_calls(folder, module)[0](torch.from_numpy(X)).numpy()
    mu = vae.encode(X)[0]
    if variant == "fp32":
        assert float(np.abs(mu - eager_mu).max()) <= 1e-5
    else:
        assert knn_overlap(mu, eager_mu, 10) >= 0.9
