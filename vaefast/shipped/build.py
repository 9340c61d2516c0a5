"""`make export`: rebuild the shipped models (``vaefast.shipped.SHIPPED``) from scratch,
deterministically, into the package (or into the folder given).

Trains each on mnist5k (10 epochs, seed 1), then exports it with its variants (calibrated
ones on mnist5k) and verification report. The same machine and thread count give the
same bytes; another CPU or thread count gives other (equally valid) weights, because
float summation order differs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from vaefast.shipped import SHIPPED, folder


def build(root: Path | None = None, names: list[str] | None = None) -> None:
    """Write each shipped model (all by default) into ``root/NAME`` (default: the
    package's own folders), replacing older copies."""
    from vaefast.export import export
    from vaefast.models.train import train
    from vaefast.runtime.variants import variant

    with tempfile.TemporaryDirectory() as runs:
        for name in names or SHIPPED:
            entry = SHIPPED[name]
            out = root / name if root else folder(name)
            config = train("mnist5k", Path(runs) / name, epochs=10, seed=1, **entry.train)
            calibrated = any(variant(v).calibrated for v in entry.variants)
            report = export(
                Path(runs) / name,
                out,
                variants=entry.variants,
                force=True,
                calibration="mnist5k" if calibrated else None,
            )
            print(
                f"{out}: test loss {config['history'][-1]['test_loss']:.2f}, fp32 "
                f"max abs error {report['fp32']['max_abs']:.2e}, int8 kNN@10 overlap "
                f"{report['int8']['knn10_overlap_vs_fp32']:.3f}"
            )


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else None, sys.argv[2:] or None)
