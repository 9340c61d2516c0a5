"""Latent-space plots from an exported model alone (ONNX Runtime, no torch).

Each view answers part of "what is plotted in a VAE latent scatter plot?" and its title
says exactly what is drawn. Every function returns a matplotlib Figure (for notebooks);
``render`` writes them to files for the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast import runtime
from vaefast.runtime.engines import DEFAULT_PROVIDERS
from vaefast.atomic import atomic_file, write_json
from vaefast.errors import VaefastError
from vaefast.images import make_grid

DENSITY_ABOVE = 200_000  # points: above this the scatter is drawn as a density image
FORMATS = ("png", "svg", "pdf")
METHODS = ("tsne", "pca")  # 2-D maps of μ when Z > 2


@dataclass
class Latents:
    """An exported model, inputs and their encodings, shared across views (one t-SNE)."""

    vae: runtime.ExportedVAE
    X: np.ndarray
    labels: np.ndarray | None
    mu: np.ndarray
    logvar: np.ndarray
    seed: int = 0
    threads: int | None = None  # Numba threads for the t-SNE map (None: all cores)
    label_names: list[str] | None = None  # the data's (default: the model's)
    _positions: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str] | None:
        """What each label means: the data's names, else the model's."""
        return self.label_names or self.vae.label_names

    @classmethod
    def from_data(
        cls,
        vae: runtime.ExportedVAE,
        X: np.ndarray,
        labels: np.ndarray | None = None,
        seed: int = 0,
    ) -> "Latents":
        """Encode X (uint8 pixels or floats in [0, 1]); labels must match X's rows."""
        X = vae.check_inputs(X)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (X.shape[0],):
                raise VaefastError(
                    f"labels have shape {labels.shape}; expected ({X.shape[0]},), one per input row"
                )
        mu, logvar = vae.encode(X)
        return cls(vae, X, labels, mu, logvar, seed)

    @property
    def sigma(self) -> np.ndarray:
        """Posterior σ = exp(½ log σ²), shaped like μ."""
        return np.exp(0.5 * self.logvar)

    @property
    def z(self) -> int:
        """Values per latent (Z, or C·h·w for spatial latents)."""
        return int(np.prod(self.mu.shape[1:]))

    @property
    def spatial(self) -> bool:
        """True for spatial latents [N, C, h, w] (latent-diffusion autoencoders)."""
        return self.mu.ndim == 4

    @property
    def flat_mu(self) -> np.ndarray:
        """μ as [N, Z] rows (spatial latents flattened)."""
        return self.mu.reshape(len(self.mu), -1)

    def describe(self) -> str:
        """What one μ is, for titles: "20-D" or "4×8×8 = 256-D (flattened)"."""
        if not self.spatial:
            return f"{self.z}-D"
        return "×".join(map(str, self.mu.shape[1:])) + f" = {self.z}-D (flattened)"

    @classmethod
    def from_store(
        cls, vae: runtime.ExportedVAE, path: str | os.PathLike, seed: int = 0
    ) -> "Latents":
        """Latents of a finished ``vaefast embed`` store (its t-SNE reused); input images
        are read on demand from the store's recorded input, only for the rows shown."""
        from vaefast.embedding import store
        from vaefast.data import reopen

        stored = store.load(path)
        attrs = stored["attrs"]
        store.check_model(attrs, vae.meta["weights_sha256"], path, vae.folder)
        recorded = attrs["input"]
        source = reopen(recorded, 1)
        if source.fingerprint() != recorded:
            raise VaefastError(
                f"{path}: its input {recorded['spec']} has changed since it "
                "was embedded; its images cannot be matched to its rows"
            )
        keep = np.setdiff1d(np.arange(len(stored["mu"])), list(stored["skipped"]))
        labels = None if stored["labels"] is None else stored["labels"][keep]
        lat = cls(
            vae,
            _RowReader(source, keep),
            labels,
            stored["mu"][keep],
            stored["logvar"][keep],
            seed,
            label_names=attrs.get("label_names"),
        )
        if stored["tsne"] is not None:
            lat._positions["tsne"] = stored["tsne"][keep].astype(np.float64)
        return lat

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The inputs of ``rows`` as displayable images in [0, 1]."""
        return self.vae.images(np.asarray(self.X[rows]))

    def positions(self, method: str = "tsne") -> tuple[np.ndarray, str]:
        """2-D positions of μ and a title saying what they are."""
        if self.z == 2:
            return self.flat_mu.astype(np.float64), "2-D posterior means μ, plotted directly"
        if method not in self._positions:
            if method == "pca":
                from sklearn.decomposition import PCA

                pca = PCA(2, random_state=self.seed)
                pos = pca.fit_transform(self.flat_mu)
                self._explained = pca.explained_variance_ratio_
            elif method == "tsne":
                from vaefast.tsne import map_points

                pos = map_points(self.flat_mu, seed=self.seed, n_jobs=self.threads)
            else:
                raise VaefastError(f"unknown method {method!r}; use {' or '.join(METHODS)}")
            self._positions[method] = pos
        name = "exact t-SNE" if method == "tsne" else "PCA"
        return self._positions[method], f"{name} of {self.describe()} posterior means μ"

    def axis_names(self, method: str = "tsne") -> tuple[str, str]:
        """What the two axes of ``positions(method)`` are: μ₁ and μ₂ at Z = 2, t-SNE 1
        and 2, or the principal components with the share of μ's variance each explains."""
        if self.z == 2:
            return "μ₁", "μ₂"
        if method == "pca":
            self.positions("pca")
            return tuple(
                f"PC{k + 1} ({100 * r:.1f} % of μ's variance)"
                for k, r in enumerate(self._explained)
            )
        return "t-SNE 1", "t-SNE 2"

    def label_axes(self, ax, method: str = "tsne") -> None:
        """Name a map's axes (their ticks are in the map's own units)."""
        x, y = self.axis_names(method)
        ax.set_xlabel(x)
        ax.set_ylabel(y)


class _RowReader:
    """Rows of a large input read one by one on demand (for the few images a view shows);
    ``index`` maps positions to the source's rows (default: all of them)."""

    def __init__(self, source, index: np.ndarray | None = None):
        self.source, self.dtype = source, source.dtype
        self.index = np.arange(source.n) if index is None else np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows) -> np.ndarray:
        return np.concatenate(
            [self.source.rows(int(r), int(r) + 1) for r in np.atleast_1d(self.index[rows])]
        )


def _figure(*args, **kwargs):
    import matplotlib.pyplot as plt  # the backend is the caller's (the CLI picks Agg)

    return plt.subplots(*args, **kwargs)


def _imshow(ax, image: np.ndarray, cmap: str = "gray") -> None:
    """Grey images through ``cmap``; colour images as they are."""
    ax.imshow(image, cmap=cmap if image.ndim == 2 else None)


def _label_name(label, names: list[str] | None) -> str:
    """A label's name; -1 is an image with no class (a file directly in an image folder)."""
    c = int(label)
    if c < 0:
        return "no label"
    return names[c] if names and c < len(names) else str(c)


def _scatter(
    ax, pos: np.ndarray, labels: np.ndarray | None, names: list[str] | None, **kwargs
) -> None:
    """One scatter of all points colored by label (a density image for huge N)."""
    import matplotlib.pyplot as plt

    if len(pos) > DENSITY_ABOVE:
        ax.hexbin(
            pos[:, 0],
            pos[:, 1],
            gridsize=300,
            bins="log",
            cmap="viridis",
            mincnt=1,
            rasterized=True,
        )
        return
    size = max(1.0, min(12.0, 20000 / max(len(pos), 1)))
    if labels is None:
        ax.scatter(pos[:, 0], pos[:, 1], s=size, c="tab:blue", lw=0, rasterized=True, **kwargs)
        return
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    color_of = {c: cmap(k % cmap.N) for k, c in enumerate(classes)}
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=size,
        c=[color_of[c] for c in labels],
        lw=0,
        rasterized=True,
        **kwargs,
    )
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", color=color_of[c], label=_label_name(c, names))
        for c in classes
    ]
    ax.legend(handles=handles, fontsize=7, markerscale=1, loc="best", title="label")


def _thumbnails(ax, pos: np.ndarray, images: np.ndarray, zoom: float = 0.6) -> None:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    for (x, y), image in zip(pos, images):
        box = AnnotationBbox(
            OffsetImage(image, cmap="gray_r" if image.ndim == 2 else None, zoom=zoom),
            (x, y),
            frameon=False,
            pad=0.0,
        )
        box.set_gid("thumbnail")
        ax.add_artist(box)


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(k, n), replace=False))


def latent(lat: Latents, method: str = "tsne", thumbnails: int = 0):
    """Case 1: the posterior means μ of given inputs, colored by label."""
    pos, what = lat.positions(method)
    fig, ax = _figure(figsize=(7, 6))
    _scatter(ax, pos, lat.labels, lat.names)
    if thumbnails:
        rows = _subsample(len(pos), thumbnails, lat.seed)
        _thumbnails(ax, pos[rows], lat.images(rows))
    ax.set_title(f"{what} (σ not used), N={len(pos)}", fontsize=10)
    lat.label_axes(ax, method)
    return fig


def uncertainty(lat: Latents, method: str = "tsne", ellipses: int = 200, examples: int = 8):
    """σ as uncertainty: ±σ ellipses around μ (Z=2) or positions colored by mean σ (Z>2),
    with the most and least certain inputs; for spatial latents, each of those inputs
    with its σ map (mean σ over channels per latent pixel) over it."""
    from matplotlib.patches import Ellipse

    pos, what = lat.positions(method)
    sigma = lat.sigma
    mean_sigma = sigma.reshape(len(sigma), -1).mean(axis=1)
    fig = _figure(figsize=(8, 9))[0]
    fig.clf()
    grid = fig.add_gridspec(3, examples, height_ratios=[6, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    if lat.z == 2:
        _scatter(ax, pos, lat.labels, lat.names, zorder=2)
        for r in _subsample(len(pos), ellipses, lat.seed):
            patch = Ellipse(
                tuple(pos[r]),
                2 * sigma[r, 0],
                2 * sigma[r, 1],
                fill=False,
                lw=0.5,
                alpha=0.6,
                color="k",
                gid="sigma-ellipse",
            )
            ax.add_patch(patch)
        ax.set_title(
            f"{what} with ±σ ellipses for {min(ellipses, len(pos))} inputs (σ = exp(½ log σ²))",
            fontsize=10,
        )
    else:
        points = ax.scatter(
            pos[:, 0], pos[:, 1], c=mean_sigma, s=4, cmap="magma_r", lw=0, rasterized=True
        )
        fig.colorbar(points, ax=ax, label=f"mean σ over the {lat.z} latent values")
        ax.set_title(f"{what}, colored by mean posterior σ (position from μ only)", fontsize=10)
    lat.label_axes(ax, method)
    order = np.argsort(mean_sigma)
    maps = sigma.mean(axis=1) if lat.spatial else None  # [N, h, w]
    shown = maps[np.concatenate([order[:examples], order[-examples:]])] if lat.spatial else None
    low, top = (float(shown.min()), float(shown.max())) if lat.spatial else (None, None)
    for row, (rows, label) in enumerate(
        (
            (order[:examples], "most certain (smallest σ)"),
            (order[::-1][:examples], "least certain (largest σ)"),
        )
    ):
        for k, r in enumerate(rows):
            axi = fig.add_subplot(grid[row + 1, k])
            image = lat.images(np.array([r]))[0]
            _imshow(axi, image, "gray_r")
            if maps is not None:  # σ map upsampled over the image (nearest, as h×w cells)
                axi.imshow(
                    maps[r],
                    cmap="magma_r",
                    alpha=0.55,
                    vmin=low,
                    vmax=top,
                    extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
                    interpolation="nearest",
                    gid="sigma-map",
                )
            axi.set_xticks([])
            axi.set_yticks([])
            axi.set_xlabel(f"σ̄={mean_sigma[r]:.2f}", fontsize=7)
            if k == 0:
                axi.set_ylabel(label.split(" (")[0], fontsize=7)
    if maps is not None:
        fig.text(
            0.5,
            0.005,
            "overlay: σ map of each input (mean σ over the "
            f"{lat.mu.shape[1]} latent channels per latent pixel, upsampled over the "
            f"image; shared colour scale {low:.3g}–{top:.3g})",
            ha="center",
            fontsize=8,
        )
    return fig


def channels(lat: Latents, examples: int = 4):
    """μ's channels as images beside their input (spatial latents); for flat latents,
    each input's μ as a strip of its Z values."""
    rows = _subsample(len(lat.mu), examples, lat.seed)
    n_cols = 1 + (lat.mu.shape[1] if lat.spatial else 1)
    fig, axes = _figure(
        len(rows), n_cols, figsize=(1.8 * n_cols + 1, 1.9 * len(rows)), squeeze=False
    )
    limit = float(np.abs(lat.mu[rows]).max()) or 1.0
    images = lat.images(rows)
    for i, r in enumerate(rows):
        _imshow(axes[i, 0], images[i], "gray_r")
        axes[i, 0].set_ylabel(f"input {r}", fontsize=8)
        maps = lat.mu[r] if lat.spatial else lat.mu[r][None, None, :]
        for c, m in enumerate(maps):
            shown = axes[i, c + 1].imshow(
                m,
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                interpolation="nearest",
                aspect="auto" if not lat.spatial else "equal",
            )
            if i == 0:
                axes[i, c + 1].set_title(
                    f"μ channel {c}" if lat.spatial else f"μ (Z={lat.z})", fontsize=8
                )
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(shown, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="μ")
    what = (
        (
            f"each input beside its {lat.mu.shape[1]} μ channels "
            f"({lat.mu.shape[2]}×{lat.mu.shape[3]} latent pixels each)"
        )
        if lat.spatial
        else f"each input beside its μ as a strip of {lat.z} values"
    )
    fig.suptitle(f"{what}; shared colour scale ±{limit:.2f}", fontsize=9)
    return fig


def samples(vae: runtime.ExportedVAE, n: int = 64, seed: int = 0, embed: bool = False):
    """Case 2: decoded z ~ N(0, I) as a grid, or placed in 2-D by their z."""
    z = vae.sample_z(n, seed)
    images = vae.images(vae.decode(z))
    if not embed:
        fig, ax = _figure(figsize=(6, 6))
        _imshow(ax, make_grid(images, nrow=int(np.ceil(np.sqrt(n)))))
        ax.axis("off")
        ax.set_title(f"{n} decoded z ~ N(0, I): μ and σ bypassed", fontsize=10)
        return fig
    if vae.latent_dim == 2:
        pos, what, axes = z.astype(np.float64), "z plotted directly", ("z₁", "z₂")
    else:
        from vaefast.tsne import map_points

        pos = map_points(z.reshape(n, -1), seed=seed)
        what, axes = f"exact t-SNE of the {vae.latent_dim}-D z", ("t-SNE 1", "t-SNE 2")
    fig, ax = _figure(figsize=(7, 7))
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.scatter(pos[:, 0], pos[:, 1], s=0)
    _thumbnails(ax, pos, images, zoom=0.8)
    ax.set_title(f"{n} decoded z ~ N(0, I) placed by {what}: μ and σ bypassed", fontsize=10)
    return fig


def latent_kl(lat: Latents) -> np.ndarray:
    """Mean KL(q(z_d|x) || N(0, 1)) per latent value over the inputs, in nats, shaped
    like one latent."""
    return 0.5 * np.mean(lat.mu**2 + np.exp(lat.logvar) - lat.logvar - 1.0, axis=0)


def manifold(lat: Latents, n: int = 20, dims: tuple[int, int] | None = None, index: int = 0):
    """Decoded grid over the prior's quantiles: the whole plane for Z=2, else a traversal
    of two dimensions (default: the two with the highest KL) around one input's μ; for
    spatial latents, two channels shifted as a whole."""
    from scipy.stats import norm

    vae = lat.vae
    grid = norm.ppf(np.linspace(0.05, 0.95, n))
    kl = latent_kl(lat)
    axes_kl = kl.reshape(kl.shape[0], -1).mean(axis=1) if lat.spatial else kl
    count, unit = (len(axes_kl), "channel") if lat.spatial else (vae.latent_dim, "dimension")
    if lat.z == 2:
        dims, base = (0, 1), np.zeros(lat.mu.shape[1:], np.float32)
        what = "decoded z over a grid of N(0, I) quantiles (norm.ppf of 0.05..0.95)"
    else:
        if dims is None:
            dims = tuple(int(d) for d in np.argsort(axes_kl)[::-1][:2])
        if not (0 <= index < len(lat.mu)):
            raise VaefastError(f"input index {index} out of range (0..{len(lat.mu) - 1})")
        if len(set(dims)) != 2 or not all(0 <= d < count for d in dims):
            raise VaefastError(f"dims {dims} must be two distinct {unit}s in 0..{count - 1}")
        base = lat.mu[index].copy()
        if lat.spatial:
            what = (
                f"decoded μ of input {index} with latent channels {dims[0]} and "
                f"{dims[1]} shifted as a whole by N(0, 1) quantiles"
            )
        else:
            what = (
                f"decoded traversal of z[{dims[0]}], z[{dims[1]}] over N(0, 1) "
                f"quantiles, the other {vae.latent_dim - 2} dims fixed at μ of input "
                f"{index}"
            )
    z = np.repeat(base[None], n * n, axis=0)
    yy, xx = np.meshgrid(grid[::-1], grid, indexing="ij")
    if lat.spatial:
        z[:, dims[0]] += xx.ravel()[:, None, None].astype(np.float32)
        z[:, dims[1]] += yy.ravel()[:, None, None].astype(np.float32)
    else:
        z[:, dims[0]], z[:, dims[1]] = xx.ravel(), yy.ravel()
    images = vae.images(vae.decode(z))
    fig, ax = _figure(figsize=(7, 7))
    _imshow(ax, make_grid(images, nrow=n, padding=0))
    ax.set_xticks([])
    ax.set_yticks([])
    name = "channel " if lat.spatial else "z["
    close = "" if lat.spatial else "]"
    ax.set_xlabel(f"{name}{dims[0]}{close}: {grid[0]:+.2f} → {grid[-1]:+.2f}")
    ax.set_ylabel(f"{name}{dims[1]}{close}: {grid[0]:+.2f} → {grid[-1]:+.2f}")
    ax.set_title(what, fontsize=9)
    return fig


def reconstructions(lat: Latents, n: int = 10):
    """Originals (top) over decode(μ) (bottom)."""
    rows = np.arange(min(n, len(lat.X)))
    recon = lat.vae.images(lat.vae.decode(lat.mu[rows]))
    fig, ax = _figure(figsize=(1.0 * len(rows) + 1, 2.6))
    _imshow(ax, make_grid(np.concatenate([lat.images(rows), recon]), nrow=len(rows)))
    ax.axis("off")
    ax.set_title("inputs (top) over reconstructions decode(μ) (bottom)", fontsize=10)
    return fig


def diagnostics(lat: Latents, active_threshold: float = 0.01):
    """Per-dimension KL and active units, σ per dimension, mean σ per class; for spatial
    latents, per-channel statistics of μ and the scaling factor that would give the
    latents unit variance beside the recorded one."""
    if lat.spatial:
        return _spatial_diagnostics(lat)
    kl = latent_kl(lat)
    activity = lat.mu.var(axis=0)  # Cov_x(E[z_d | x]) (Burda et al., 2016)
    active = activity > active_threshold
    fig, axes = _figure(1, 3, figsize=(15, 4))
    dims = np.arange(lat.z)
    axes[0].bar(dims, kl, color=np.where(active, "tab:blue", "tab:gray"))
    axes[0].set_title(
        f"KL(q(z_d|x) ‖ N(0,1)) per dimension; {int(active.sum())} of {lat.z} "
        f"active (Var[μ_d] > {active_threshold})",
        fontsize=9,
    )
    axes[0].set_xlabel("latent dimension d")
    axes[0].set_xticks(dims)
    axes[0].set_ylabel("mean KL (nats)")
    axes[1].boxplot([lat.sigma[:, d] for d in dims], positions=dims, showfliers=False)
    axes[1].set_title("posterior σ per dimension over the inputs", fontsize=9)
    axes[1].set_xlabel("latent dimension d")
    axes[1].set_ylabel("σ")
    if lat.labels is not None:
        classes = np.unique(lat.labels)
        names = lat.names
        means = [lat.sigma[lat.labels == c].mean() for c in classes]
        axes[2].bar([_label_name(c, names) for c in classes], means)
        axes[2].set_title("mean σ per class (higher: the encoder is less sure)", fontsize=9)
        axes[2].tick_params(axis="x", rotation=45)
    else:
        axes[2].set_title("mean σ per class: no labels given", fontsize=9)
        axes[2].axis("off")
    fig.tight_layout()
    return fig


def unit_variance_scale(lat: Latents) -> float:
    """The factor that gives z ~ q(z|x) unit variance over these inputs, as latent
    diffusion's ``scaling_factor`` is chosen: 1 / sqrt(Var[μ] + E[σ²]) (total variance)."""
    return float(
        1.0 / np.sqrt(lat.mu.var(dtype=np.float64) + np.mean(np.exp(lat.logvar), dtype=np.float64))
    )


def _spatial_diagnostics(lat: Latents):
    per_channel = lat.mu.transpose(1, 0, 2, 3).reshape(lat.mu.shape[1], -1)
    sigma = lat.sigma.transpose(1, 0, 2, 3).reshape(lat.mu.shape[1], -1)
    channels_ = np.arange(len(per_channel))
    fig, axes = _figure(1, 3, figsize=(15, 4))
    axes[0].errorbar(
        channels_, per_channel.mean(axis=1), yerr=per_channel.std(axis=1), fmt="o", capsize=4
    )
    axes[0].axhline(0.0, color="gray", lw=0.8)
    axes[0].set_title("μ per latent channel: mean ± std over inputs and latent pixels", fontsize=9)
    axes[0].set_xlabel("latent channel")
    axes[0].set_xticks(channels_)
    axes[1].boxplot(list(sigma), positions=channels_, showfliers=False)
    axes[1].set_title("posterior σ per latent channel", fontsize=9)
    axes[1].set_xlabel("latent channel")
    axes[1].set_ylabel("σ")
    measured = unit_variance_scale(lat)
    recorded = (lat.vae.meta.get("latent_scaling") or {}).get("scaling_factor")
    names, values = ["unit variance\n(these inputs)"], [measured]
    if recorded is not None:
        names.append("recorded\n(model config)")
        values.append(float(recorded))
    axes[2].bar(names, values, color=["tab:blue", "tab:gray"][: len(values)])
    for k, v in enumerate(values):
        axes[2].text(k, v, f"{v:.4g}", ha="center", va="bottom", fontsize=9)
    axes[2].set_title(
        "scaling factor: 1/√(Var[μ] + E[σ²]) over these inputs"
        + (" vs the recorded one" if recorded is not None else " (none recorded)"),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class View:
    """One plot view: its function (Latents and options -> Figure) and its caption."""

    draw: Callable[..., Any]
    caption: str


VIEWS: dict[str, View] = {
    "latent": View(
        lambda lat, method="tsne", thumbnails=0, **_: latent(lat, method, thumbnails),
        "Where each input's posterior mean μ lands; σ is not used for position.",
    ),
    "uncertainty": View(
        lambda lat, method="tsne", ellipses=200, **_: uncertainty(lat, method, ellipses),
        "How wide each input's posterior is: σ = exp(½ log σ²) from the encoder.",
    ),
    "samples": View(
        lambda lat, embed=False, **_: samples(lat.vae, 64, lat.seed, embed),
        "Images decoded from z drawn from the prior N(0, I); the encoder, μ and σ play no part.",
    ),
    "manifold": View(
        lambda lat, dims=None, index=0, **_: manifold(lat, dims=dims, index=index),
        "What the decoder draws as two latent coordinates sweep the prior's quantiles.",
    ),
    "reconstructions": View(
        lambda lat, **_: reconstructions(lat),
        "Inputs over decode(μ(input)): what the model keeps of each input.",
    ),
    "channels": View(
        lambda lat, **_: channels(lat),
        "μ's channels as images beside their input (spatial latents); for flat "
        "latents, μ as a strip of its values.",
    ),
    "diagnostics": View(
        lambda lat, **_: diagnostics(lat),
        "Per-dimension KL to the prior, active units, σ per dimension and "
        "per class; for spatial latents, μ and σ per channel and the scaling "
        "factor that gives unit variance beside the recorded one.",
    ),
}


def _view(kind: str) -> View:
    if kind not in VIEWS:
        raise VaefastError(f"unknown plot kind {kind!r}; use one of {', '.join(VIEWS)} or all")
    return VIEWS[kind]


def figure(kind: str, lat: Latents, **options) -> Any:
    """The Figure of one view; ``options`` are the views' keyword options (method,
    thumbnails, ellipses, embed, dims, index), each view taking the ones it knows."""
    return _view(kind).draw(lat, **{k: v for k, v in options.items() if v is not None})


def render(
    kind: str,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data: str | None = None,
    max_points: int = 5000,
    formats: tuple[str, ...] = ("png",),
    seed: int = 0,
    embeddings: str | os.PathLike | None = None,
    variant: str = "fp32",
    providers: str = DEFAULT_PROVIDERS,
    threads: int | None = None,
    precision: str | None = None,
    **options,
) -> list[Path]:
    """Write one view (or ``all`` with an index page) for an exported model; return paths.

    With ``embeddings`` (a finished ``vaefast embed`` store) every row of the store is
    plotted from its stored μ, σ and t-SNE, without encoding anything again.
    ``variant`` and ``providers`` pick the exported model run (recorded in views.json).
    """
    from vaefast import data as data_mod

    if kind != "all":
        _view(kind)
    kinds = tuple(VIEWS) if kind == "all" else (kind,)
    for fmt in formats:
        if fmt not in FORMATS:
            raise VaefastError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    vae = runtime.load(
        model_dir,
        providers=providers,
        variant=variant,
        threads=threads,
        precision=precision,
        spin=False,
    )
    if embeddings is not None:
        lat = Latents.from_store(vae, embeddings, seed)
        spec = str(embeddings)
    else:
        spec = data or (vae.meta.get("training") or {}).get("data") or "mnist5k"
        prep = data_mod.preprocess_for(spec, vae.display_shape)
        if prep is None:
            raw = data_mod.read(spec)
            X, y, names = raw.X, raw.y, raw.label_names
        else:  # encoded images: only the rows shown are decoded
            source = data_mod.open_source(spec, prep)
            X, y, names = _RowReader(source), source.labels, source.label_names
        vae.check_inputs(np.asarray(X[:1]))  # a layout mismatch fails before any work
        rows = _subsample(len(X), max_points, seed) if len(X) > max_points else np.arange(len(X))
        lat = Latents.from_data(vae, np.asarray(X[rows]), None if y is None else y[rows], seed)
        lat.label_names = names
    lat.threads = threads
    out = Path(out)
    written = []
    import matplotlib.pyplot as plt

    for k in kinds:
        fig = figure(k, lat, **options)
        for fmt in formats:
            path = out / f"{k}.{fmt}"
            with atomic_file(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
            written.append(path)
        plt.close(fig)
    if kind == "all":
        written.append(_index(out, formats[0], vae, spec, len(lat.mu)))
    return written


def _index(out: Path, fmt: str, vae: runtime.ExportedVAE, spec: str, n: int) -> Path:
    lines = [
        f"# Latent views of `{vae.folder}` (Z={vae.latent_dim}, {vae.variant} on "
        f"{vae.providers[0]}) on `{spec}` ({n} inputs)",
        "",
    ]
    for k, view in VIEWS.items():
        lines += [f"## {k}", "", view.caption, "", f"![{k}]({k}.{fmt})", ""]
    path = out / "index.md"
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines))
    write_json(
        out / "views.json",
        {
            "model": str(vae.folder),
            "variant": vae.variant,
            "providers": vae.providers,
            "data": spec,
            "n": n,
            "captions": {k: v.caption for k, v in VIEWS.items()},
        },
    )
    return path
