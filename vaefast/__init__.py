"""vaefast: a performance-focused toolkit for VAE latent spaces.

Data flows one way: data -> train -> export -> runtime -> (embed, tsne) -> plot / bench.
Nothing downstream of ``export`` imports torch.
"""

from vaefast.errors import VaefastError

__version__ = "0.1.0"
__all__ = ["VaefastError", "__version__"]
