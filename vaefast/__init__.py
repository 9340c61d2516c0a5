"""vaefast: a performance-focused toolkit for VAE latent spaces.

Data flows one way: data -> train -> export -> runtime -> (embed, tsne) -> plot / bench.
Nothing downstream of ``export`` imports torch.
"""

from vaefast.errors import VaefastError

__version__ = "0.1.0"
__all__ = ["VaefastError", "__version__", "embed"]


def __getattr__(name: str):
    # vaefast.embed(...) without importing numpy, zarr and ONNX Runtime at `import vaefast`
    if name == "embed":
        from vaefast.embedding import embed

        return embed
    raise AttributeError(f"module 'vaefast' has no attribute {name!r}")
