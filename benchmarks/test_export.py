"""The README's AutoencoderKL export as a user runs it — ``vaefast export --diffusers
kl-vae --data mnist5k`` — against the same model exported by hand: TorchScript's
``torch.onnx.export`` with a batch axis and one ONNX Runtime check against eager at batch
256 (what a careful user writes; ``HAND``). Whole processes, rounds interleaved
(VAEFAST_BENCH_SLOW_ROUNDS). The goal: at most 2x the hand-written export plus check.
Only under ``make bench``; ``make test`` runs the README example itself."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import ROOT, SLOW_ROUNDS, ratio_spread, timed_rounds

HAND = """
import sys, warnings
import numpy as np, onnxruntime as ort, torch
from diffusers import AutoencoderKL

vae = AutoencoderKL.from_pretrained(sys.argv[1]).eval()


class Half(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.vae = vae


class Encoder(Half):
    def forward(self, x):
        posterior = self.vae.encode(x).latent_dist
        return posterior.mean, posterior.logvar


class Decoder(Half):
    def forward(self, z):
        return self.vae.decode(z).sample


x = torch.rand(8, 1, 28, 28) * 2 - 1
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    z = Encoder()(x)[0]
    for module, example, ins, outs, f in (
        (Encoder(), x, ["x"], ["mu", "logvar"], "encoder.onnx"),
        (Decoder(), z, ["z"], ["x_hat"], "decoder.onnx"),
    ):
        axes = {n: {0: "batch"} for n in ins + outs}
        torch.onnx.export(module, (example,), f, input_names=ins, output_names=outs,
                          dynamic_axes=axes, opset_version=18, dynamo=False)
    xs = torch.rand(256, 1, 28, 28) * 2 - 1
    mu, logvar = Encoder()(xs)
    x_hat = Decoder()(mu)
cpu = ["CPUExecutionProvider"]
encoder = ort.InferenceSession("encoder.onnx", providers=cpu)
decoder = ort.InferenceSession("decoder.onnx", providers=cpu)
o_mu, o_logvar = encoder.run(None, {"x": xs.numpy()})
o_x_hat = decoder.run(None, {"z": mu.numpy()})[0]
pairs = ((o_mu, mu), (o_logvar, logvar), (o_x_hat, x_hat))
worst = max(float(np.abs(a - b.numpy()).max()) for a, b in pairs)
assert worst < 1e-4, worst
"""


def test_readme_autoencoder_kl_export_against_the_hand_written_one(benchmark, tmp_path):
    from tests.test_readme import readme_examples

    if benchmark.disabled:
        pytest.skip("timed only under make bench (make test runs the README example)")
    pytest.importorskip("diffusers")
    subprocess.run(
        [sys.executable, "-c", readme_examples()["make_kl_vae.py"]], cwd=tmp_path, check=True
    )

    def run(name: str) -> float:
        here = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path))
        command = (
            [sys.executable, "-m", "vaefast.cli", "export", "--diffusers"]
            + [str(tmp_path / "kl-vae"), "--data", "mnist5k", "--out", "kl"]
            if name == "vaefast"
            else [sys.executable, "-c", HAND, str(tmp_path / "kl-vae")]
        )
        t0 = time.perf_counter()
        subprocess.run(command, cwd=here, check=True, capture_output=True)
        return time.perf_counter() - t0

    _, mine, others = timed_rounds(
        benchmark, lambda: run("vaefast"), SLOW_ROUNDS, others={"hand": lambda: run("hand")}
    )
    times = {"vaefast": mine, "hand": others["hand"]}
    benchmark.group = "export: the README's AutoencoderKL, whole processes"
    benchmark.extra_info.update(
        vaefast_median_s=float(np.median(times["vaefast"])),
        hand_median_s=float(np.median(times["hand"])),
        vaefast_over_hand=ratio_spread(times["vaefast"], times["hand"]),
        cwd=str(ROOT),
    )
