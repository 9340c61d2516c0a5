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

from benchmarks.conftest import THREADS, ratio_spread, record
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
_RESULTS: dict[str, dict] = {}


def _measure(sd_vae: dict, rounds: int) -> dict[str, dict]:
    """Each part's first output row and per-round median times, by kind: one process per
    kind serves both parts (a process start with torch and diffusers costs more than the
    small model's calls), rounds interleaved across kinds."""
    if _RESULTS:
        return _RESULTS
    pool = {
        k: Worker(k, sd_vae["exported"], f"diffusers:{sd_vae['dir']}", THREADS)
        for k in KINDS
        if available(k)
    }
    try:
        for part in PARTS:
            heads = {k: w.time(part, 1, 1)["head"] for k, w in pool.items()}  # warm-up
            times: dict[str, list[float]] = {k: [] for k in pool}
            for _ in range(rounds):
                for kind, worker in pool.items():
                    times[kind].append(float(np.median(worker.time(part, 1, 1)["times"])))
                    time.sleep(0.05)
            _RESULTS[part] = {"heads": heads, "times": times}
    finally:
        for worker in pool.values():
            worker.close()
    return _RESULTS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("part", PARTS)
def test_sd_vae_batch1(benchmark, sd_vae, part, kind):
    if not available(kind):
        pytest.skip(f"{kind} not available here")
    rounds = 0 if benchmark.disabled else ROUNDS
    result = _measure(sd_vae, rounds)[part]
    head, reference = np.array(result["heads"][kind]), np.array(result["heads"]["eager"])
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
    if benchmark.disabled:
        benchmark(lambda: None)
        return
    mine = result["times"][kind]
    record(benchmark, mine)
    benchmark.extra_info["seconds"] = float(np.median(mine))
    if kind != "eager":
        benchmark.extra_info["speedup_vs_eager"] = ratio_spread(result["times"]["eager"], mine)
    if kind != "runtime-fp32":
        benchmark.extra_info["speedup_vs_runtime_fp32"] = ratio_spread(
            result["times"]["runtime-fp32"], mine
        )
    for name in ("int8-static", "fp16", "openvino"):
        if name in kind and name in sd_vae["report"]:
            r = sd_vae["report"][name]
            benchmark.extra_info.update(
                mu_rel_error_vs_fp32=r["mu_rel_error"],
                recon_psnr_db_vs_fp32=r["recon_psnr_db_vs_fp32"],
            )
