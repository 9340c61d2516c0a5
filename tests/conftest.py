"""Shared fixtures: one short real training run and its export per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def short_run(tmp_path_factory) -> Path:
    """A real 2-epoch training run on 1,000 mnist5k rows (Z=20)."""
    from vaefast.train import train

    out = tmp_path_factory.mktemp("runs") / "short"
    train("mnist5k", out, epochs=2, max_train=1000, progress=False)
    return out


@pytest.fixture(scope="session")
def short_export(short_run, tmp_path_factory) -> Path:
    """The short run exported with int8 and fp16 variants."""
    from vaefast.export import export

    out = tmp_path_factory.mktemp("exported") / "short"
    export(short_run, out, variants=("int8", "fp16"))
    return out


def pytest_collection_modifyitems(config, items):
    from tests import test_sklearn_tsne

    test_sklearn_tsne.pytest_collection_modifyitems_for(items)
