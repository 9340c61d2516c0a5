"""Latent plots from the shipped exported models: every kind renders, says what it shows,
and draws what was asked; no torch."""

from __future__ import annotations


import numpy as np
import pytest

from tests.helpers import EXPORTED
from vaefast import data, plot, runtime
from vaefast.errors import VaefastError

Z20, Z2 = EXPORTED / "mnist5k-z20", EXPORTED / "mnist5k-z2"


@pytest.fixture(scope="module")
def latents():
    raw = data.read("mnist5k")
    rows = np.random.default_rng(0).choice(len(raw.X), 400, replace=False)
    return {
        z: plot.Latents.from_data(runtime.load(folder, providers="cpu"), raw.X[rows], raw.y[rows])
        for z, folder in ((20, Z20), (2, Z2))
    }


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)


@pytest.mark.parametrize("z", [20, 2])
@pytest.mark.parametrize("kind", plot.VIEWS)
def test_every_kind_renders_a_titled_non_blank_image(latents, kind, z):
    import matplotlib.pyplot as plt

    fig = plot.figure(kind, latents[z])
    assert _pixels(fig).std() > 10
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles, f"{kind} has no title"
    plt.close(fig)


def test_titles_say_exactly_what_is_plotted(latents):
    import matplotlib.pyplot as plt

    assert (
        plot.latent(latents[20])
        .axes[0]
        .get_title()
        .startswith("exact t-SNE of 20-D posterior means μ (σ not used)")
    )
    assert (
        plot.latent(latents[2])
        .axes[0]
        .get_title()
        .startswith("2-D posterior means μ, plotted directly (σ not used)")
    )
    assert "μ and σ bypassed" in plot.samples(latents[2].vae).axes[0].get_title()
    plt.close("all")


@pytest.mark.parametrize(
    "z, method, axes",
    [
        (2, "tsne", ("μ₁", "μ₂")),
        (20, "tsne", ("t-SNE 1", "t-SNE 2")),
        (20, "pca", ("PC1 (", "PC2 (")),
    ],
)
def test_every_map_names_its_axes(latents, z, method, axes):
    """μ₁/μ₂ where μ is the map, t-SNE 1/2, or the principal components with the share of
    μ's variance each explains (checked against scikit-learn's PCA)."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    for view in (plot.latent, plot.uncertainty):
        ax = view(latents[z], method=method).axes[0]
        assert ax.get_xlabel().startswith(axes[0]) and ax.get_ylabel().startswith(axes[1])
        if method == "pca":
            ratio = PCA(2).fit(latents[z].flat_mu).explained_variance_ratio_
            assert ax.get_xlabel() == f"PC1 ({100 * ratio[0]:.1f} % of μ's variance)"
    plt.close("all")


def test_z2_scatter_positions_are_mu_exactly(latents):
    import matplotlib.pyplot as plt

    fig = plot.latent(latents[2])
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_array_equal(np.asarray(offsets), latents[2].mu.astype(np.float64))
    plt.close(fig)


def test_thumbnail_and_ellipse_counts_match_the_request(latents):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    fig = plot.latent(latents[20], thumbnails=17)
    assert sum(a.get_gid() == "thumbnail" for a in fig.axes[0].artists) == 17
    fig = plot.uncertainty(latents[2], ellipses=23)
    ellipses = [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 23
    mu, sigma = latents[2].mu, latents[2].sigma
    for e in ellipses:  # centred on a μ, axes 2σ of that input
        r = int(np.argmin(np.abs(mu - np.asarray(e.center)).sum(1)))
        assert e.width == pytest.approx(2 * sigma[r, 0]) and e.height == pytest.approx(
            2 * sigma[r, 1]
        )
    plt.close("all")


def test_render_all_writes_every_view_and_an_index(tmp_path):
    written = plot.render("all", Z2, tmp_path, max_points=300, formats=("png", "svg"))
    names = {p.name for p in written}
    assert {f"{k}.png" for k in plot.VIEWS} | {f"{k}.svg" for k in plot.VIEWS} <= names
    index = (tmp_path / "index.md").read_text()
    assert all(f"({k}.png)" in index and plot.VIEWS[k].caption in index for k in plot.VIEWS)


def test_labels_of_the_wrong_length_are_refused():
    vae = runtime.load(Z2, providers="cpu")
    with pytest.raises(VaefastError, match="labels have shape"):
        plot.Latents.from_data(vae, np.zeros((5, 784), np.uint8), np.zeros(4))


def test_plots_from_an_embedding_store_reuse_its_tsne(tmp_path):
    import matplotlib.pyplot as plt

    from vaefast.embedding.pipeline import embed

    raw = data.read("mnist5k")
    np.savez(tmp_path / "x.npz", X=raw.X[:600], y=raw.y[:600])
    embed(Z20, str(tmp_path / "x.npz"), tmp_path / "e.zarr", tsne=True, progress=False)
    vae = runtime.load(Z20, providers="cpu")
    lat = plot.Latents.from_store(vae, tmp_path / "e.zarr")
    fig = plot.latent(lat, thumbnails=5)
    import zarr

    stored = zarr.open_group(str(tmp_path / "e.zarr"), mode="r")["tsne"][:]
    np.testing.assert_array_equal(
        np.asarray(fig.axes[0].collections[0].get_offsets()), stored.astype(np.float64)
    )
    np.testing.assert_allclose(lat.images(np.array([3]))[0].ravel(), raw.X[3] / 255.0, atol=1e-7)
    plt.close(fig)
    with pytest.raises(VaefastError, match="another model"):
        plot.Latents.from_store(runtime.load(Z2, providers="cpu"), tmp_path / "e.zarr")
