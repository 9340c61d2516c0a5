"""An SD-VAE-shaped diffusers ``AutoencoderKL`` (SD 1.x blocks 128/256/512/512, 4 latent
channels, random weights) at 256x256, batch 1, exported by ``vaefast export --diffusers``
with static int8 and fp16: the model's own ``encode``/``decode`` (fp32 and bf16 autocast)
against vaefast.runtime on ONNX Runtime (fp32, int8-static, fp16) and OpenVINO (bf16 where
the CPU has it, f32), each in its own process, rounds interleaved.

``make bench``: the SD 1.x shape, VAEFAST_BENCH_SD_ROUNDS (3) rounds; ``make test``: a
small AutoencoderKL at 32x32, once, as a correctness check of the same path.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from benchmarks.conftest import THREADS, ratio_spread, worker_rounds
from benchmarks.worker import Worker, available

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

ROUNDS = int(os.environ.get("VAEFAST_BENCH_SD_ROUNDS", "3"))
KINDS = [
    "eager",
    "eager-bf16",
    "runtime-fp32",
    "runtime-int8-static",
    "runtime-fp16",
    "openvino-bf16",
    "openvino-f32",
]
SD_1X = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 256}
SMALL = {
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}


@pytest.fixture(scope="module")
def sd_vae(tmp_path_factory, request):
    """The saved AutoencoderKL and its export (int8-static, fp16), with export timings."""
    pytest.importorskip("diffusers")
    import torch
    from diffusers import AutoencoderKL

    from vaefast.export import export_diffusers

    disabled = request.config.getoption("benchmark_disable", False)
    config = SMALL if disabled else SD_1X
    n = len(config["block_out_channels"])
    torch.manual_seed(0)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        **config,
    ).eval()
    root = tmp_path_factory.mktemp("sd-vae")
    model.save_pretrained(root / "vae", safe_serialization=True)
    t0 = time.perf_counter()
    report = export_diffusers(
        root / "vae", root / "exported", n_examples=4, variants=("int8-static", "fp16")
    )
    return {
        "dir": root / "vae",
        "exported": root / "exported",
        "report": report,
        "export_s": time.perf_counter() - t0,
        "side": config["sample_size"],
        "name": "sd-1.x-shaped" if not disabled else "small-autoencoder-kl",
    }


PARTS = ("encoder", "decoder")


@pytest.fixture(scope="module")
def pool(sd_vae):
    """One worker process per kind, serving both parts (a process start with torch and
    diffusers costs more than the small model's calls); each part's first output rows and
    per-round seconds by kind, filled as the tests run (eager first)."""
    workers = {
        k: Worker(k, sd_vae["exported"], f"diffusers:{sd_vae['dir']}", THREADS)
        for k in KINDS
        if available(k)
    }
    yield {"workers": workers, "heads": {}, "times": {part: {} for part in PARTS}}
    for worker in workers.values():
        worker.close()


def _heads(pool: dict, part: str) -> dict:
    """Every kind warmed on ``part`` at batch 1, and its first output row; once per part."""
    if part not in pool["heads"]:
        pool["heads"][part] = {k: w.time(part, 1, 1)["head"] for k, w in pool["workers"].items()}
    return pool["heads"][part]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", PARTS)
def test_sd_vae_batch1(benchmark, sd_vae, pool, part, kind):
    """One call a round, ROUNDS rounds, timed by pytest-benchmark (the worker's own clock for
    the ratios); speed-ups against eager and ONNX Runtime fp32, measured before this kind."""
    if not available(kind):
        pytest.skip(f"{kind} not available here")
    heads = _heads(pool, part)
    head, reference = np.array(heads[kind]), np.array(heads["eager"])
    err = float(np.abs(head - reference).max())
    scale = float(np.abs(reference).max())
    limit = {"eager": 0.0, "runtime-fp32": 1e-4, "openvino-f32": 1e-3}.get(kind, 0.25 * scale)
    assert err <= limit, (kind, err, limit)
    benchmark.group = f"{sd_vae['name']} {part} {sd_vae['side']}x{sd_vae['side']} batch=1"
    benchmark.extra_info.update(
        model=sd_vae["name"],
        part=part,
        runtime=kind,
        batch=1,
        threads=THREADS,
        process_isolated=True,
        max_abs_error_vs_eager=err,
        export_s=sd_vae["export_s"],
    )
    worker = pool["workers"][kind]
    if worker.prepared != (part, 1):
        worker.time(part, 1, 1)
    rounds = worker_rounds(benchmark, worker, 1, 1 if benchmark.disabled else ROUNDS)
    if benchmark.disabled:
        return
    times = pool["times"][part]
    times[kind] = mine = [t for r in rounds for t in r]  # one call a round
    benchmark.extra_info["seconds"] = float(np.median(mine))
    for reference_kind, key in (
        ("eager", "speedup_vs_eager"),
        ("runtime-fp32", "speedup_vs_runtime_fp32"),
    ):
        if kind != reference_kind and reference_kind in times:
            benchmark.extra_info[key] = ratio_spread(times[reference_kind], mine)
    for name in ("int8-static", "fp16", "openvino"):
        if name in kind and name in sd_vae["report"]:
            r = sd_vae["report"][name]
            benchmark.extra_info.update(
                mu_rel_error_vs_fp32=r["mu_rel_error"],
                recon_psnr_db_vs_fp32=r["recon_psnr_db_vs_fp32"],
            )
