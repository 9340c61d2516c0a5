"""scikit-learn's own t-SNE tests (the installed sklearn/manifold/tests/test_t_sne.py) run
against vaefast.tsne.TSNE through a thin adapter: the module's ``TSNE`` becomes a function
that builds vaefast's estimator, except for an explicit ``method="barnes_hut"`` inside
tests that loop over both methods (that part stays scikit-learn's own).

Cases for the Barnes-Hut method and tests of scikit-learn's private helpers do not apply
and are skipped with their reason (``NOT_APPLICABLE``, listed in docs/tsne.md too).
"""

from __future__ import annotations

import pytest

sklearn_tests = pytest.importorskip("sklearn.manifold.tests.test_t_sne")

from sklearn.manifold import TSNE as SklearnTSNE  # noqa: E402

from vaefast.tsne import TSNE  # noqa: E402


def adapter(*args, **kwargs):
    """vaefast's TSNE, unless a test explicitly asks for scikit-learn's Barnes-Hut."""
    if kwargs.get("method") == "barnes_hut":
        return SklearnTSNE(*args, **kwargs)
    return TSNE(*args, **kwargs)


sklearn_tests.TSNE = adapter

PRIVATE = "tests scikit-learn's private helpers, not the estimator"
BARNES_HUT = "Barnes-Hut only; vaefast computes the exact method"
NOT_APPLICABLE = {
    "test_gradient_descent_stops": PRIVATE,
    "test_binary_search": PRIVATE,
    "test_binary_search_underflow": PRIVATE,
    "test_binary_search_neighbors": PRIVATE,
    "test_binary_perplexity_stability": PRIVATE,
    "test_gradient": PRIVATE,
    "test_trustworthiness": "tests sklearn.manifold.trustworthiness, not TSNE",
    "test_trustworthiness_n_neighbors_error": "tests sklearn.manifold.trustworthiness",
    "test_answer_gradient_two_points": PRIVATE,
    "test_answer_gradient_four_points": PRIVATE,
    "test_skip_num_points_gradient": PRIVATE,
    "test_n_components_range": BARNES_HUT,
    "test_barnes_hut_angle": BARNES_HUT,
    "test_gradient_bh_multithread_match_sequential": BARNES_HUT,
    "test_bh_match_exact": "compares Barnes-Hut with exact",
    "test_high_perplexity_precomputed_sparse_distances": BARNES_HUT,
    "test_sparse_precomputed_distance": "compares Barnes-Hut with exact on sparse distances",
    "test_verbose": "expects the Barnes-Hut default's 'nearest neighbors...' line",
    "test_tsne_with_mahalanobis_distance": "expects the Barnes-Hut default's neighbour search "
    "to refuse mahalanobis without V; the exact method "
    "(scikit-learn's too) computes V from X",
}

for _name in dir(sklearn_tests):
    if _name.startswith("test_"):
        globals()[_name] = getattr(sklearn_tests, _name)


def pytest_collection_modifyitems_for(items) -> None:
    """Mark the cases that do not apply (called from tests/conftest.py)."""
    for item in items:
        if item.module is None or item.module.__name__ != __name__:
            continue
        name = item.originalname or item.name
        params = getattr(getattr(item, "callspec", None), "params", {})
        if name in NOT_APPLICABLE:
            item.add_marker(pytest.mark.skip(reason=NOT_APPLICABLE[name]))
        elif params.get("method") == "barnes_hut":
            item.add_marker(pytest.mark.skip(reason=BARNES_HUT))
