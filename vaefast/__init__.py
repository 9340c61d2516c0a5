"""vaefast: a performance-focused toolkit for VAE latent spaces.

Data flows one way: data -> train -> export -> runtime -> (embed, tsne) -> plot / bench.
Nothing downstream of ``export`` imports torch.
"""

from vaefast.errors import VaefastError

__version__ = "0.2.0"
__all__ = ["VaefastError", "__version__", "embed", "export_vae"]

# vaefast.embed(...) / vaefast.export_vae(...) without importing numpy, zarr, ONNX Runtime
# or torch at `import vaefast`
_LAZY = {"embed": "vaefast.embedding.pipeline", "export_vae": "vaefast.export"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaefast' has no attribute {name!r}")
