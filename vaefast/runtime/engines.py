"""Inference engines for exported ONNX files: one table, ``ENGINES``, from a ``providers``
name to the engine that opens a model file as a session (``run(output_names, feeds)``,
``get_inputs``, ``get_outputs``, ``get_providers``, ``get_modelmeta``).

This module is the one owner of ``providers``: each engine resolves its own values
(ONNX Runtime's auto and fallback chains, the check that a GPU was not silently dropped),
says whether it is installed, which precisions and variants it runs, and where its
agreement with ONNX Runtime fp32 is recorded at export. The runtime, export's report,
``bench recommend`` and the CLI's choices iterate the table; adding an engine is one entry.

- ``onnxruntime`` (``auto``, ``cpu``, ``cuda``, ``tensorrt``): ONNX Runtime sessions.
- ``openvino``: Intel's OpenVINO runtime reading the same ONNX files (``pip install
  'vaefast[openvino]'``), in bf16 where the CPU has AMX or AVX512_BF16 (asked of OpenVINO
  at run time), f32 elsewhere, or as ``precision`` says. Nothing falls back silently.

No engine is fastest everywhere (OpenVINO bf16 wins on large conv models with bf16
hardware; ONNX Runtime wins on tiny MLPs at batch 1): ``vaefast bench recommend`` measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from vaefast.errors import VaefastError, first_line
from vaefast.extras import missing, require

PRECISIONS = ("bf16", "f32")  # OpenVINO's
DEFAULT_PROVIDERS = "auto"  # the one default of every command and function
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def session_options(threads: int | None = None, spin: bool = True, arena: bool = True):
    """ONNX Runtime options: intra-op thread count, spinning (off beside torch), and its
    CPU memory arena (off where memory is measured and bounded: the arena grows in
    power-of-two steps and keeps what it took)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = arena
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3
    return so


def open_session(path: Path, providers: list[str], options):
    """An InferenceSession, with unreadable files turned into a clear error."""
    import onnxruntime as ort

    if not path.is_file():
        raise VaefastError(f"{path} not found; export the model again")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # ORT raises its own types for truncated or invalid protobufs
        raise VaefastError(f"{path}: not a loadable ONNX model ({first_line(e, 200)})") from None


def cpu_session(path: Path, options=None):
    """A plain ONNX Runtime session of ``path`` on the CPU (the reference engine's CPU
    chain): what export, calibration and their timings run on."""
    cpu = ENGINES["onnxruntime"].on_cpu
    return open_session(Path(path), engine_for(cpu).chain(cpu), options)


def _onnxruntime_chain(providers: str | list[str]) -> list[str]:
    """ONNX Runtime providers to try, in order, for a ``providers`` value; a named GPU
    provider this build lacks is an error naming what it has."""
    import onnxruntime as ort

    if not isinstance(providers, str):
        return list(providers)
    available = ort.get_available_providers()
    if providers == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    wanted = ORT_PROVIDERS[providers]
    if wanted not in available:
        raise VaefastError(
            f"{wanted} is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    chain = {
        "cpu": [wanted],
        "cuda": [wanted, "CPUExecutionProvider"],
        "tensorrt": [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"],
    }
    return [p for p in chain[providers] if p in available]


def _onnxruntime_check(session, providers: str | list[str]) -> None:
    """Asking for a GPU provider and getting the CPU is an error, never a fallback."""
    if (
        isinstance(providers, str)
        and providers in ("cuda", "tensorrt")
        and session.get_providers()[0] != ORT_PROVIDERS[providers]
    ):
        raise VaefastError(
            f"asked for {providers} but ONNX Runtime fell back to "
            f"{session.get_providers()[0]} (no usable GPU?)"
        )


def on_gpu(session) -> bool:
    """Whether a session runs on a GPU (its inputs are then bound to device buffers)."""
    return session.get_providers()[0] in GPU_PROVIDERS


def _open_onnxruntime(
    path: Path, chain: list[str], threads: int | None, spin: bool, precision: str | None
):
    if precision is not None:
        raise VaefastError(
            "precision applies to providers='openvino'; for ONNX Runtime "
            "pick a variant (fp32, int8, int8-static, fp16)"
        )
    return open_session(path, chain, session_options(threads, spin))


def openvino_precision(folder: Path | None = None) -> str:
    """OpenVINO's default precision for the model in ``folder``: the faster of its
    precisions as measured on this CPU at export (``precision_probe`` in its export report),
    where that CPU is this one; else bf16 where OpenVINO's CPU plugin reports BF16 (AMX or
    AVX512_BF16), else f32 — a flag alone, which on some CPUs picks the slower."""
    if folder is not None:
        from vaefast.runtime.manifest import read_report

        probe = read_report(folder).get("openvino", {}).get(PROBE_KEY) or {}
        if probe.get("cpu") == cpu_id() and probe.get("faster") in _openvino_precisions():
            return probe["faster"]
    return "bf16" if "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


PROBE_KEY = "precision_probe"  # where export records each precision's measured speed


def cpu_id() -> str:
    """This CPU as a precision probe names it: vendor, family, model and the flags that
    decide OpenVINO's precisions."""
    from vaefast.bench.machine import cpuinfo

    info = cpuinfo()
    flags = sorted(set(info.get("flags", "").split()) & {"amx_bf16", "avx512_bf16", "avx512_fp16"})
    cpu = f"{info.get('vendor_id', '?')} family {info.get('cpu family', '?')} model "
    return cpu + " ".join([info.get("model", "?"), *flags])


def _core():
    require("openvino", "providers 'openvino'")
    import openvino as ov

    return ov.Core()


def _openvino_reason(e: Exception) -> str:
    """What an OpenVINO error says failed (its first lines only say where, in its source):
    the operators it cannot convert, with what to do when they are ONNX Runtime's own."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "No conversion rule found for operations:" in line:
            ops = line.split(":", 1)[1].strip()
            hint = (
                "; they are ONNX Runtime's own operators: run this variant with --providers cpu"
                if "com.microsoft" in ops
                else ""
            )
            return f"it has no conversion for {ops}{hint}"
    said = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return said[-1][:300] if said else first_line(e)


class OpenVINOSession:
    """An OpenVINO compiled model behind the calls the runtime makes of an ONNX Runtime
    session (one infer request: use one per thread, as ONNX Runtime sessions are not
    meant to be shared across threads by the runtime either)."""

    def __init__(self, path: Path, threads: int | None, precision: str | None):
        core = _core()
        if not path.is_file():
            raise VaefastError(f"{path} not found; export the model again")
        precision = precision or openvino_precision(path.parent)
        if precision not in PRECISIONS:
            raise VaefastError(f"unknown precision {precision!r}; use {' or '.join(PRECISIONS)}")
        try:
            model = core.read_model(str(path))
            config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            raise VaefastError(f"{path}: OpenVINO cannot load it: {_openvino_reason(e)}") from None
        self._request = self._compiled.create_infer_request()
        self.precision = precision
        info = model.get_rt_info()  # the ONNX file's metadata_props, under "framework"
        framework = info["framework"] if "framework" in info else {}
        self._meta = {k: str(v.astype(str)) for k, v in framework.items()}
        self._inputs = [self._port(p) for p in model.inputs]
        self._outputs = [self._port(p) for p in model.outputs]

    @staticmethod
    def _port(port) -> SimpleNamespace:
        shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
        return SimpleNamespace(name=port.get_any_name(), shape=shape)

    def run(self, output_names: list[str] | None, feeds: dict[str, Any]) -> list:
        result = self._request.infer(feeds, share_inputs=True, share_outputs=False)
        names = output_names or [o.name for o in self._outputs]
        return [result[name] for name in names]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self) -> list[str]:
        return [f"OpenVINO CPU {self.precision}"]

    @property
    def engine_precision(self) -> str:
        return self.precision

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map=self._meta)


def _open_openvino(
    path: Path, chain: list[str], threads: int | None, spin: bool, precision: str | None
):
    return OpenVINOSession(path, threads, precision)


@dataclass(frozen=True)
class Engine:
    """One way of running exported ONNX files: ``open(path, provider chain, threads,
    spin, precision)`` returns a session; ``chain(providers)`` resolves a ``providers``
    value to what ``open`` takes; ``check(session, providers)`` refuses a silent
    fallback. ``precisions()``: what it can run on this machine (best first; ``(None,)``
    where the variant decides). ``all_variants``: runs every exported variant (else fp32
    only). ``report_key``: where export records its agreement with ONNX Runtime fp32
    (None for the reference engine, whose variants are recorded by name). ``extra``: the
    ``vaefast.extras`` entry that installs it (None: the base install)."""

    name: str
    open: Callable[..., Any]
    providers: tuple[str, ...]  # the ``providers`` names that select it
    describe: str
    extra: str | None = None
    chain: Callable[[str | list[str]], list[str]] = lambda providers: []
    check: Callable[[Any, str | list[str]], None] = lambda session, providers: None
    precisions: Callable[[], tuple[str | None, ...]] = lambda: (None,)
    all_variants: bool = True
    report_key: str | None = None
    label: str = ""  # how reports name it
    cpu: str = ""  # the ``providers`` value that runs it on the CPU (default: the first)

    @property
    def on_cpu(self) -> str:
        return self.cpu or self.providers[0]

    def installed(self) -> bool:
        return self.extra is None or not missing(self.extra)


def _openvino_precisions() -> tuple[str, ...]:
    bf16 = "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ("bf16", "f32") if bf16 else ("f32",)


ENGINES: dict[str, Engine] = {
    "onnxruntime": Engine(
        "onnxruntime",
        _open_onnxruntime,
        ("auto", "cpu", "cuda", "tensorrt"),
        "ONNX Runtime (variants fp32, int8, int8-static, fp16; CUDA and "
        "TensorRT with onnxruntime-gpu)",
        chain=_onnxruntime_chain,
        check=_onnxruntime_check,
        label="ONNX Runtime",
        cpu="cpu",
    ),
    "openvino": Engine(
        "openvino",
        _open_openvino,
        ("openvino",),
        "OpenVINO on the CPU, bf16 where the CPU has it (AMX, AVX512_BF16), else f32",
        extra="openvino",
        precisions=_openvino_precisions,
        report_key="openvino",
        label="OpenVINO",
    ),
}


def engine_for(providers: str | list[str] = DEFAULT_PROVIDERS) -> Engine:
    """The engine a ``providers`` value selects (a list: ONNX Runtime provider names);
    one whose extra is missing is refused in one line naming it."""
    if not isinstance(providers, str):
        return ENGINES["onnxruntime"]
    for engine in ENGINES.values():
        if providers in engine.providers:
            if engine.extra:
                require(engine.extra, f"providers {providers!r}")
            return engine
    raise VaefastError(f"unknown providers {providers!r}; use {', '.join(provider_names())}")


def provider_names() -> list[str]:
    """Every ``providers`` value the table knows (for CLI choices and messages)."""
    return [p for e in ENGINES.values() for p in e.providers]


def session_precision(session) -> str | None:
    """The precision an engine's session runs at (None: the variant's own)."""
    return getattr(session, "engine_precision", None)
