"""`vaefast bench recommend MODEL`: which engine, variant and precision runs this model
fastest on this machine at the user's batch size, within an agreement bound.

Each candidate runs in its own process (engines' threads never share a process), times
the call users make (``vaefast.runtime`` ``encode``/``decode``, or the eager model's own
``encode``), and returns its outputs on a seeded batch so agreement with ONNX Runtime fp32
is measured on the spot (μ relative error and kNN@10 overlap for the encoder; PSNR of
decoded images for the decoder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from vaefast.bench.contention import watch
from vaefast.errors import VaefastError

AGREEMENT_ROWS = 256  # seeded rows the agreement is measured on


def time_in_process(
    exported: str | os.PathLike,
    part: str,
    batches: tuple[int, ...],
    threads: int,
    engine: str = "onnxruntime",
    variant: str = "fp32",
    providers: str | None = None,
    precision: str | None = None,
    min_time: float = 0.3,
) -> tuple[dict[int, float], np.ndarray]:
    """({batch: median seconds}, outputs on the seeded agreement batch) of one candidate
    run in its own process (``vaefast.bench.timing``). ``engine`` "eager" is the vaefast-trained
    model's own call."""
    import tempfile

    from vaefast.runtime import manifest
    from vaefast.runtime.engines import DEFAULT_PROVIDERS

    meta = manifest.read_model_json(exported)
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "exported": str(exported),
            "part": part,
            "threads": threads,
            "batches": list(batches),
            "engine": engine,
            "variant": variant,
            "providers": providers or DEFAULT_PROVIDERS,
            "precision": precision,
            "min_time": min_time,
            "input_shape": list(manifest.input_shape(meta)),
            "latent_shape": list(manifest.latent_shape(meta)),
            "agreement_rows": AGREEMENT_ROWS,
            "outputs": os.path.join(tmp, "out.npy"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "vaefast.bench.timing", json.dumps(spec)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise VaefastError(f"{engine} {variant} {precision or ''}: {last[:200]}")
        seconds = json.loads(result.stdout.strip().splitlines()[-1])
        outputs = np.load(spec["outputs"])
    return {int(k): v for k, v in seconds.items()}, outputs


def candidates(exported: str | os.PathLike) -> list[dict[str, Any]]:
    """Every way this machine's CPU can run the export: each installed engine of
    ``vaefast.runtime.engines.ENGINES`` on its CPU providers, at each precision it has here, on
    each exported variant it runs (GPU-only variants left out). ONNX Runtime fp32, the
    reference, comes first."""
    from vaefast.runtime import manifest
    from vaefast.runtime.engines import ENGINES
    from vaefast.runtime.variants import variant

    names = list(manifest.read_model_json(exported).get("variants", {"fp32": None}))
    out = []
    for engine in ENGINES.values():
        if not engine.installed():
            continue
        for name in names if engine.all_variants else ["fp32"]:
            if variant(name).gpu_only:
                continue
            out += [
                {
                    "engine": engine.name,
                    "variant": name,
                    "providers": engine.on_cpu,
                    "precision": precision,
                }
                for precision in engine.precisions()
            ]
    return out


def recommend(
    exported: str | os.PathLike,
    batch: int = 1,
    part: str = "encoder",
    threads: int | None = None,
    min_overlap: float | None = None,
    min_psnr: float = 30.0,
) -> dict[str, Any]:
    """Time every candidate (``candidates``) at ``batch`` in its own process, measure its
    agreement with ONNX Runtime fp32, and pick the fastest that agrees (encoder: kNN@10
    overlap >= ``min_overlap``, default each variant's own target; decoder: PSNR >=
    ``min_psnr`` dB). Returns the rows and the choice — None when any candidate was timed
    while other processes kept the cores busy (``under_load`` names them): a choice made
    from such timings would be the machine's, not the candidates'."""
    from vaefast.metrics import knn_overlap, max_errors, psnr
    from vaefast.runtime.variants import PARTS, variant

    if part not in PARTS:
        raise VaefastError(f"unknown part {part!r}; use {' or '.join(PARTS)}")
    if batch < 1:
        raise VaefastError(f"batch must be >= 1, got {batch}")
    threads = threads or len(os.sched_getaffinity(0))
    rows, reference = [], None
    for c in candidates(exported):
        with watch() as contention:
            seconds, out = time_in_process(
                exported,
                part,
                (batch,),
                threads,
                c["engine"],
                c["variant"],
                c["providers"],
                c["precision"],
            )
        if reference is None:
            reference = out  # ONNX Runtime fp32 comes first
        row = dict(c, seconds=seconds[batch], rows_per_s=batch / seconds[batch])
        row["contention"] = contention
        if part == "encoder":
            flat = (len(out), -1)
            row["mu_rel_error"] = max_errors(out, reference)["max_rel"]
            row["knn10_overlap"] = knn_overlap(out.reshape(flat), reference.reshape(flat), 10)
            wanted = (
                min_overlap
                if min_overlap is not None
                else (variant(c["variant"]).min_overlap or 0.0)
            )
            row["agrees"] = bool(row["knn10_overlap"] >= wanted)
        else:
            row["psnr_db"] = psnr(out, reference)
            row["agrees"] = bool(row["psnr_db"] >= min_psnr)
        rows.append(row)
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup_vs_onnxruntime_fp32"] = base / row["seconds"]
    best = min((r for r in rows if r["agrees"]), key=lambda r: r["seconds"])
    loaded = [r for r in rows if r["contention"]["under_load"]]
    return {
        "rows": rows,
        "choice": None if loaded else best,
        "under_load": [describe(r) for r in loaded],
        "batch": batch,
        "part": part,
        "threads": threads,
    }


def describe(row: dict[str, Any]) -> str:
    """How to ask for a candidate: the runtime.load arguments."""
    text = f"providers={row['providers']!r}, variant={row['variant']!r}"
    return text + (f", precision={row['precision']!r}" if row["precision"] else "")


def format_table(result: dict[str, Any]) -> str:
    """The measured rows as Markdown, and the recommendation."""
    from vaefast.bench.report import format_seconds

    agree = "kNN@10 overlap" if result["part"] == "encoder" else "PSNR vs fp32"
    lines = [
        f"| engine | variant | precision | {result['part']}, batch {result['batch']} | "
        f"rows/s | × ONNX Runtime fp32 | {agree} | agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        figure = (
            f"{r['knn10_overlap']:.3f}" if result["part"] == "encoder" else f"{r['psnr_db']:.1f} dB"
        )
        lines.append(
            f"| {r['engine']} | {r['variant']} | {r['precision'] or '—'} | "
            f"{format_seconds(r['seconds'])} | {r['rows_per_s']:,.0f} | "
            f"{r['speedup_vs_onnxruntime_fp32']:.2f}× | {figure} | "
            f"{'yes' if r['agrees'] else 'no'} |"
        )
    if result["choice"] is None:
        lines.append(
            f"\nno recommendation: the machine was busy while timing {len(result['under_load'])}"
            " candidate(s); run again when it is quiet"
        )
    else:
        lines.append(
            f"\nrecommended: runtime.load(MODEL, {describe(result['choice'])}) "
            f"({result['threads']} threads)"
        )
    return "\n".join(lines)
