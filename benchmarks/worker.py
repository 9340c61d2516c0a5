"""A benchmark worker: one runtime in its own process, configured as users deploy it.

``python -m benchmarks.worker KIND MODEL_DIR THREADS [MODULE]`` reads JSON commands on
stdin and answers on stdout, one line each:

- ``{"part": "encoder"|"decoder", "batch": B, "calls": C, "seed": S}`` -> the C call
  durations in seconds (each call timed alone, after one warm-up call) and the first
  output row, for agreement checks;
- ``{"round": C}`` -> ``{"done": C}`` after C more calls on the last command's inputs, each
  timed alone (the parent times the round with pytest-benchmark's clock);
- ``{"times": true}`` -> the last round's C call durations;
- ``{"quit": true}``.

Kinds: ``eager`` (the model's own ``encode``/``decode`` under ``torch.inference_mode()``,
``torch.set_num_threads``), ``eager-bf16`` (the same under CPU bf16 autocast),
``eager-compile`` (``torch.compile`` of those calls), ``runtime-VARIANT``
(``vaefast.runtime.load(...).encode/decode``: the API users call), ``openvino-bf16`` /
``openvino-f32`` (the same through OpenVINO), ``session-VARIANT`` (a bare
``onnxruntime.InferenceSession.run``, to show the wrapper's cost), ``runtime-cuda`` and
``runtime-tensorrt``. ONNX Runtime workers never import torch and keep ONNX Runtime's
thread spinning on, its default.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vaefast.bench.timing import inputs


def _runner(kind: str, folder: Path, threads: int, module: str | None):
    """(prepare, run, finish, input shape, latent shape) of one runtime: ``prepare`` and
    ``finish`` (untimed) put inputs into and outputs out of what that runtime's users hold
    — tensors in the model's own range for eager PyTorch and bare sessions, [0, 1] arrays
    for vaefast.runtime — and ``run`` is the call users make (timed)."""
    from vaefast.runtime import engines, manifest
    from vaefast import runtime

    meta = manifest.read_model_json(folder)
    shape, z = manifest.input_shape(meta), manifest.latent_shape(meta)
    lo, hi = meta.get("input_range") or (0.0, 1.0)
    olo, ohi = meta.get("output_range") or (0.0, 1.0)
    logits = meta.get("decoder_output") == "logits"

    def to_model(part: str, x: np.ndarray) -> np.ndarray:
        return (x * np.float32(hi - lo) + np.float32(lo)) if part == "encoder" else x

    def to_unit(part: str, out: np.ndarray) -> np.ndarray:  # decoder outputs as runtime's
        if part == "encoder":
            return out
        out = 1.0 / (1.0 + np.exp(-out)) if logits else out
        return np.clip((out - olo) / (ohi - olo), 0.0, 1.0)

    family, _, variant = kind.partition("-")
    if family == "eager":  # the model's own encode/decode, as users call it
        import contextlib

        import torch

        from benchmarks.eager import eager_calls

        torch.set_num_threads(threads)
        calls = dict(zip(("encoder", "decoder"), eager_calls(folder, module)))
        if variant == "compile":
            calls = {k: torch.compile(f) for k, f in calls.items()}

        def autocast():
            return (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if variant == "bf16"
                else contextlib.nullcontext()
            )

        def run(part: str, x):
            with torch.inference_mode(), autocast():
                return calls[part](x)

        return (
            (lambda part, x: torch.from_numpy(np.ascontiguousarray(to_model(part, x)))),
            run,
            (lambda part, out: to_unit(part, out.float().numpy())),
            shape,
            z,
        )
    if family in ("runtime", "openvino"):
        providers = {"runtime": "cpu", "openvino": "openvino"}[family]
        if variant in ("cuda", "tensorrt"):
            providers, variant = variant, "fp32"
        vae = runtime.load(
            folder,
            providers=providers,
            threads=threads,
            variant=variant if family == "runtime" else "fp32",
            precision=variant if family == "openvino" else None,
        )

        def run(part: str, x: np.ndarray):
            if part == "encoder":
                return vae.encode(x, batch_size=len(x))[0]
            return vae.decode(x, batch_size=len(x))

        return (lambda part, x: x), run, (lambda part, out: out), shape, z
    if family == "session":
        import onnxruntime as ort

        from vaefast.runtime.variants import model_files

        options = engines.session_options(threads, spin=True)
        sessions = {
            part: ort.InferenceSession(
                str(folder / name), options, providers=["CPUExecutionProvider"]
            )
            for part, name in zip(("encoder", "decoder"), model_files(variant))
        }

        def run(part: str, x: np.ndarray):
            return sessions[part].run(None, {"x" if part == "encoder" else "z": x})[0]

        return (
            (lambda part, x: np.ascontiguousarray(to_model(part, x), np.float32)),
            run,
            to_unit,
            shape,
            z,
        )
    raise SystemExit(f"unknown worker kind {kind!r}")


class Worker:
    """One runtime in its own process, driven over a pipe."""

    def __init__(self, kind: str, folder: Path, module: str | None, threads: int):
        args = [sys.executable, "-m", "benchmarks.worker", kind, str(folder), str(threads)]
        self.kind = kind
        self.prepared: tuple[str, int] | None = None  # (part, batch) of the last ``time``
        self.proc = subprocess.Popen(
            args + ([module] if module else []),
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-500:])

    def _ask(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(self.proc.stderr.read()[-500:])
        return json.loads(line)

    def time(self, part: str, batch: int, calls: int) -> dict:
        """Prepare (part, batch), warm it up, then time ``calls`` calls; the first output row."""
        self.prepared = (part, batch)
        return self._ask({"part": part, "batch": batch, "calls": calls})

    def round(self, calls: int) -> None:
        """``calls`` more calls of the last ``time`` command: one benchmark round."""
        self._ask({"round": calls})

    def last_times(self) -> list[float]:
        """Each call's seconds in the last round, as the worker timed it."""
        return self._ask({"times": True})["times"]

    def close(self) -> None:
        try:
            self.proc.stdin.write('{"quit": true}\n')
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()


def available(kind: str) -> bool:
    """Whether this machine can run a worker of ``kind`` (OpenVINO installed, bf16 on the
    CPU, a CUDA build of ONNX Runtime)."""
    import importlib.util

    if kind.startswith("openvino"):
        if importlib.util.find_spec("openvino") is None:
            return False
        if kind == "openvino-bf16":
            from vaefast.runtime.engines import openvino_precision

            return openvino_precision() == "bf16"
    if kind != "runtime-cuda":
        return True
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def main(argv: list[str]) -> None:
    kind, folder, threads = argv[0], Path(argv[1]), int(argv[2])
    prepare, run, finish, shape, z = _runner(
        kind, folder, threads, argv[3] if len(argv) > 3 else None
    )
    print(json.dumps({"ready": kind}), flush=True)
    last, times = None, []
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        if "round" in cmd:
            times = []
            for _ in range(cmd["round"]):
                t0 = time.perf_counter()
                run(*last)
                times.append(time.perf_counter() - t0)
            print(json.dumps({"done": cmd["round"]}), flush=True)
            continue
        if cmd.get("times"):
            print(json.dumps({"times": times}), flush=True)
            continue
        part = cmd["part"]
        x = prepare(part, inputs(part, cmd["batch"], shape, z, cmd.get("seed", 0)))
        last = (part, x)
        out = run(part, x)  # warm-up (and torch.compile's compilation)
        times = []
        for _ in range(cmd["calls"]):
            t0 = time.perf_counter()
            out = run(part, x)
            times.append(time.perf_counter() - t0)
        head = np.asarray(finish(part, out)[0], np.float64).ravel()[:64].tolist()
        print(json.dumps({"times": times, "head": head}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
