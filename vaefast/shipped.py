"""`make export`: rebuild the shipped models in ``exported/`` from scratch, deterministically.

Trains the default VAE on mnist5k (10 epochs, seed 1) with Z=20 and Z=2, then exports
each with its int8 variant and verification report.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

SHIPPED = {"mnist5k-z20": 20, "mnist5k-z2": 2}


def build(root: Path) -> None:
    """Write ``root/mnist5k-z20`` and ``root/mnist5k-z2``, replacing older copies."""
    from vaefast.export import export
    from vaefast.train import train

    with tempfile.TemporaryDirectory() as runs:
        for name, z in SHIPPED.items():
            train("mnist5k", Path(runs) / name, latent_dim=z, epochs=10, seed=1)
            report = export(Path(runs) / name, root / name, int8=True, force=True)
            print(f"{root / name}: fp32 max abs error {report['fp32']['max_abs']:.2e}, int8 "
                  f"kNN@10 overlap {report['int8']['knn10_overlap_vs_fp32']:.3f}")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "exported"))
