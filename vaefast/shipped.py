"""`make export`: rebuild the shipped models in ``exported/`` from scratch, deterministically.

Trains on mnist5k (10 epochs, seed 1) the default MLP VAE with Z=20 and Z=2 and the conv
VAE with Z=16, then exports each with its int8 variant (and the conv VAE with static int8,
calibrated on mnist5k) and verification report. The
same machine and thread count give the same bytes; another CPU or thread count gives
other (equally valid) weights, because float summation order differs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

SHIPPED = {  # name -> train() options
    "mnist5k-z20": {"latent_dim": 20},
    "mnist5k-z2": {"latent_dim": 2},
    "mnist5k-conv-z16": {"arch": "conv", "latent_dim": 16, "hidden_dim": 256},
}
VARIANTS = {"mnist5k-conv-z16": ("int8", "int8-static")}  # name -> variants (default int8)


def build(root: Path, names: list[str] | None = None) -> None:
    """Write ``root/NAME`` for each shipped model (all by default), replacing older copies."""
    from vaefast.export import export
    from vaefast.train import train
    from vaefast.variants import variant

    with tempfile.TemporaryDirectory() as runs:
        for name in names or SHIPPED:
            config = train("mnist5k", Path(runs) / name, epochs=10, seed=1, **SHIPPED[name])
            chosen = VARIANTS.get(name, ("int8",))
            calibrated = any(variant(v).calibrated for v in chosen)
            report = export(
                Path(runs) / name,
                root / name,
                variants=chosen,
                force=True,
                calibration="mnist5k" if calibrated else None,
            )
            print(
                f"{root / name}: test loss {config['history'][-1]['test_loss']:.2f}, fp32 "
                f"max abs error {report['fp32']['max_abs']:.2e}, int8 kNN@10 overlap "
                f"{report['int8']['knn10_overlap_vs_fp32']:.3f}"
            )


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "exported"), sys.argv[2:] or None)
