"""Versions of the packages that shape a result, for config.json and model.json."""

from __future__ import annotations

import importlib.metadata
import platform


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (plus python and vaefast); missing ones are omitted."""
    out = {"python": platform.python_version()}
    for name in ("vaefast", *names):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
