"""Loading the models export takes: a user's ``file.py:function`` with safetensors weights,
a saved diffusers ``AutoencoderKL`` folder, the eager model behind an export, and the
example and calibration images from a data spec."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from vaefast.runtime import manifest
from vaefast.runtime import variants as variants_mod
from vaefast.errors import VaefastError, first_line
from vaefast.extras import require
from vaefast.layout import arrange, display_shape
from vaefast.export.trace import _quiet


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_module(target: str, weights: str | os.PathLike | None = None):
    """Build a model from ``path/to/file.py:function`` and load ``weights`` into it:
    safetensors, or a PyTorch state dict read with ``weights_only=True`` (never a pickle
    of arbitrary objects)."""
    path, sep, fn_name = target.rpartition(":")
    if not sep or not path.endswith(".py") or not fn_name.isidentifier():
        raise VaefastError(f"--module {target!r}: write it as path/to/file.py:function")
    if not Path(path).is_file():
        raise VaefastError(f"--module {target!r}: {path} not found")
    import torch

    spec = importlib.util.spec_from_file_location(f"vaefast_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise VaefastError(
            f"{path}: failed to import ({type(e).__name__}: {first_line(e)})"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise VaefastError(f"{path} has no function {fn_name}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise VaefastError(f"{target}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        model.load_state_dict(_read_state(Path(weights), model))
    return model.eval()


def _read_state(path: Path, model) -> dict:
    import torch

    if not path.is_file():
        raise VaefastError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise VaefastError(
            f"{path}: not a loadable safetensors file or state dict ({first_line(e)})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VaefastError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        shapes = [k for k in set(got) & set(expected) if got[k] != expected[k]][:3]
        raise VaefastError(
            f"{path}: weights do not fit the model (missing {missing}, "
            f"unexpected {extra}, other shapes {shapes})"
        )
    return state


def _load_sized(spec: str, input_shape: tuple[int, ...], image_shape=None):
    """``vaefast.data.load(spec)``, encoded images decoded to the model's input size."""
    from vaefast import data

    return data.load(spec, data.preprocess_for(spec, display_shape(input_shape, image_shape)))


def _calibration_images(
    spec: str | None, input_shape: tuple[int, ...], image_shape=None, n: int = 256
) -> np.ndarray | None:
    """Up to ``n`` images of data spec ``spec`` laid out as ``input_shape`` (a seeded
    sample of its training split), to calibrate static int8; None without a spec."""
    if spec is None:
        return None
    ds = _load_sized(spec, input_shape, image_shape)
    rows = np.random.default_rng(0).permutation(len(ds.X_train))[:n]
    try:
        return arrange(ds.X_train[np.sort(rows)], input_shape, ds.image_shape)
    except VaefastError as e:
        raise VaefastError(f"--calibration {spec}: {e}") from None


def _verification_inputs(
    data: str | None, input_shape: tuple[int, ...], seed: int, n: int = 256
) -> dict[str, Any]:
    """export_vae's example and data facts: ``data``'s test split laid out as
    ``input_shape``, or ``n`` seeded uniform random images in [0, 1]."""
    if data is None:
        return {"example": np.random.default_rng(seed).random((n, *input_shape), dtype=np.float32)}
    ds = _load_sized(data, input_shape)
    return {
        "example": arrange(ds.X_test, input_shape, ds.image_shape),
        "label_names": ds.label_names,
        "pixel_scale": ds.scale,
        "image_shape": ds.image_shape,
        "training": {"data": data},
    }


DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def load_diffusers(folder: str | os.PathLike):
    """A diffusers ``AutoencoderKL`` from a local ``save_pretrained`` folder (config.json
    + safetensors weights; a pipeline folder's ``vae/`` is found too). Nothing is
    downloaded and no pickle is read. Returns (model, weights path)."""
    folder = Path(folder)
    if (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "vae"
    if not folder.is_dir():
        raise VaefastError(f"--diffusers {folder}: no such folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VaefastError(
            f"--diffusers {folder}: no config.json; expected a folder written "
            "by AutoencoderKL.save_pretrained"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise VaefastError(f"{config_path}: not readable JSON ({first_line(e)})") from None
    cls = config.get("_class_name") if isinstance(config, dict) else None
    if cls == "AutoencoderTiny":
        raise VaefastError(
            f"--diffusers {folder}: an AutoencoderTiny (TAESD) encodes to one "
            "latent with no posterior, so sigma is undefined and there is no "
            "(mu, logvar) to export; export the AutoencoderKL it distils "
            "instead, or wrap it as --module FILE.py:FUNCTION returning "
            "(mu, logvar)"
        )
    if cls != "AutoencoderKL":
        raise VaefastError(
            f"--diffusers {folder}: config.json describes {cls or 'no class'}, not an AutoencoderKL"
        )
    weights = folder / DIFFUSERS_WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" ({', '.join(pickled)} is a pickle, which vaefast never loads)" if pickled else ""
        raise VaefastError(f"--diffusers {folder}: no {DIFFUSERS_WEIGHTS}{hint}")
    require("diffusers", "--diffusers")
    from diffusers import AutoencoderKL

    try:
        with _quiet():
            # low_cpu_mem_usage=False: what diffusers falls back to without `accelerate`,
            # said here so it does not print a notice that asks the user for nothing
            model = AutoencoderKL.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False
            )
    except Exception as e:
        raise VaefastError(
            f"--diffusers {folder}: cannot load the AutoencoderKL "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    return model.eval(), weights


def load_eager(exported_dir: str | os.PathLike):
    """Rebuild the eager PyTorch VAE of a vaefast-trained export from its fp32 ONNX
    weights (for benchmarks), so the shipped models can be compared with eager PyTorch
    without shipping the run folder."""
    import onnx
    import torch
    from onnx import numpy_helper

    from vaefast.models.modules import build

    meta = manifest.read_model_json(exported_dir)
    config = meta.get("architecture") or (
        {"arch": "mlp", **{k: meta[k] for k in ("input_dim", "hidden_dim", "latent_dim")}}
        if "hidden_dim" in meta
        else {}
    )
    if "module" in config or not config:
        raise VaefastError(
            f"{exported_dir}: not a vaefast-trained model; rebuild the eager "
            "model from your own module"
        )
    model = build(config)
    state = {}
    for name in variants_mod.model_files("fp32"):
        graph = onnx.load(str(manifest.model_folder(exported_dir) / name)).graph
        for init in graph.initializer:
            key = re.sub(r"^(model|vae)\.", "", init.name)
            state[key] = torch.from_numpy(numpy_helper.to_array(init).copy())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items() if k in expected} != expected:
        raise VaefastError(f"{exported_dir}: ONNX weights do not match model.json sizes")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()
