"""Embedding datasets through an exported encoder: the streaming, resumable pipeline
(``pipeline``), the zarr store it writes and others read (``store``), and the points a map
is fitted to (``points``).

``from vaefast.embedding import embed`` works; it is loaded on first use, so that reading a
store does not load the pipeline.
"""

__all__ = ["embed"]


def __getattr__(name: str):
    if name == "embed":
        from vaefast.embedding.pipeline import embed

        return embed
    raise AttributeError(f"module 'vaefast.embedding' has no attribute {name!r}")
