"""`make demo`: the main job end to end on the embedded default data (mnist5k).

Each stage prints what it measured; every artefact lands under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(out: Path, epochs: int = 10) -> None:
    """Train on mnist5k into ``out/run``."""
    from vaefast.train import train

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    config = train("mnist5k", out / "run", epochs=epochs, force=True)
    last = config["history"][-1]
    print(f"[train] mnist5k, Z=20, {epochs} epochs in {time.perf_counter() - t0:.1f} s: "
          f"test loss {last['test_loss']:.2f} per sample -> {out / 'run'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    run(args.out, args.epochs)


if __name__ == "__main__":
    main()
