"""`vaefast demo`: the main job end to end on the embedded data (mnist5k), from any folder.

Train the PyTorch example's VAE, export it (fp32 + int8, verified), encode through ONNX
Runtime, batch-embed with an exact t-SNE, plot every view (also of the shipped models),
and print a side-by-side table and the command that opens the explorer. Every artefact
lands under ``out``; nothing is written anywhere else. Needs the ``train`` extra.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaefast.errors import VaefastError


@dataclass(frozen=True)
class Plan:
    """How much one demo does."""

    epochs: int  # the MLP VAE's
    conv_epochs: int  # the conv VAE's; 0: none trained
    tsne_max: int  # exact t-SNE on this many rows, the rest placed (embed's tsne_max)
    plot_points: int  # inputs each plot encodes
    shipped_plots: tuple[str, ...]  # shipped models plotted beside the trained ones
    summary_tsne: int  # points of the side-by-side t-SNE


PLANS = {
    "full": Plan(10, 5, 10_000, 5000, ("mnist5k-z20", "mnist5k-z2"), 500),
    "quick": Plan(2, 0, 1000, 1000, ("mnist5k-z2",), 300),
}


def run(out: str | os.PathLike = "vaefast-demo", quick: bool = False) -> Path:
    """Train on mnist5k (the example's MLP, then a conv VAE unless ``quick``), export,
    encode through ONNX Runtime, batch-embed with t-SNE, plot every view and print the
    side-by-side table; returns the embedding store. ``quick``: a first look in about a
    minute (fewer epochs, a smaller map, no conv VAE)."""
    from vaefast.extras import require

    require("train", "the demo")
    plan = PLANS["quick" if quick else "full"]
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    train_run(out / "run", epochs=plan.epochs)
    exported = export_and_encode(out)
    store = embed_and_map(out, exported, plan.tsne_max)
    models = {"mlp": exported} | {n.removeprefix("mnist5k-"): n for n in plan.shipped_plots}
    if plan.conv_epochs:
        train_run(
            out / "conv-run", epochs=plan.conv_epochs, arch="conv", latent_dim=16, hidden_dim=256
        )
        models["conv"] = export_and_encode(out, "conv-run", "conv-exported")
    plot_views(out, models, plan.plot_points)
    print(
        "[bench] quick side-by-side summary: each runtime in its own process, as deployed "
        "(eager: the model's own encode under torch.inference_mode; ONNX Runtime with its "
        "threads spinning); make bench measures with rounds and spreads:"
    )
    print(quick_summary(exported, tsne_n=plan.summary_tsne))
    print(f"[explore] in a browser: vaefast explore {exported} {store}")
    return store


OUTPUTS = ("run", "exported", "embeddings.zarr", "conv-run", "conv-exported")  # and plots-*


def _check_out(out: Path) -> None:
    """``out`` must be new, empty, or an earlier demo's (whose outputs it replaces): a
    folder of the user's, or a file, is refused with nothing touched."""
    if out.exists() and not out.is_dir():
        raise VaefastError(f"--out {out} is a file; give a folder for the demo to write")
    other = sorted(
        p.name
        for p in (out.iterdir() if out.is_dir() else ())
        if p.name not in OUTPUTS and not p.name.startswith("plots-")
    )
    if other:
        raise VaefastError(
            f"--out {out} holds {', '.join(other[:3])}{', …' if len(other) > 3 else ''}, "
            "which the demo did not write; give a new or empty folder (nothing was touched)"
        )


def train_run(folder: Path, **options) -> None:
    """Train on mnist5k into ``folder`` and print what it reached."""
    from vaefast.models.train import train

    t0 = time.perf_counter()
    config = train("mnist5k", folder, force=True, **options)
    last = config["history"][-1]
    sizes = config["model"]
    print(
        f"[train] {sizes['arch']} VAE on mnist5k, Z={sizes['latent_dim']}, {last['epoch']} "
        f"epochs in {time.perf_counter() - t0:.1f} s: test loss {last['test_loss']:.2f} per "
        f"sample -> {folder}"
    )


def export_and_encode(out: Path, run: str = "run", name: str = "exported") -> Path:
    """Export a demo run with int8, then encode the test split through ONNX Runtime."""
    from vaefast import data, runtime
    from vaefast.export import export, format_report

    t0 = time.perf_counter()
    report = export(out / run, out / name, variants=("int8",), force=True)
    print(f"[export] {out / name} in {time.perf_counter() - t0:.1f} s")
    print(format_report(report))
    vae = runtime.load(out / name)
    X = data.load("mnist5k").X_test
    t0 = time.perf_counter()
    mu, logvar = vae.encode(X)
    print(
        f"[runtime] encoded {len(X)} test images through ONNX Runtime "
        f"({', '.join(vae.providers)}) in {1e3 * (time.perf_counter() - t0):.1f} ms: "
        f"mu {mu.shape}, mean sigma {float(np.exp(0.5 * logvar).mean()):.3f}"
    )
    return out / name


def embed_and_map(out: Path, exported: Path, tsne_max: int = 10_000) -> Path:
    """Batch-embed all of mnist5k into a zarr store with an exact t-SNE of the means
    (of ``tsne_max`` rows, the rest placed on that map)."""
    from vaefast.embedding.pipeline import embed

    store = out / "embeddings.zarr"
    shutil.rmtree(store, ignore_errors=True)  # the demo's own output from an earlier run
    stats = embed(exported, "mnist5k", store, tsne=True, tsne_max=tsne_max, progress=False)
    t = stats["tsne"]
    print(f"[embed] {stats['rows']} rows -> {store} at {stats['rows_per_s']:.0f} rows/s")
    print(
        f"[t-SNE] exact on {t['reference_rows']} of {t['n']} rows, Z=20: KL {t['kl']:.4f} "
        f"after {t['iterations']} iterations in {t['fit_s']:.2f} s "
        f"({t['pairs_per_s']:.2e} pairs/s)"
        + (
            f"; the other {t['placed_rows']} placed on that map in {t['place_s']:.2f} s"
            if t["placed_rows"]
            else ""
        )
    )
    return store


def plot_views(out: Path, models: dict[str, str | Path], max_points: int = 5000) -> None:
    """Every latent view for each model (``plots-NAME``), from ONNX alone."""
    import matplotlib

    matplotlib.use("Agg")
    from vaefast.plot import render

    for name, model in models.items():
        t0 = time.perf_counter()
        folder = out / f"plots-{name}"
        written = render("all", model, folder, thumbnails=40, max_points=max_points)
        print(
            f"[plot] {len(written) - 1} views of {model} -> {folder}/index.md "
            f"in {time.perf_counter() - t0:.1f} s"
        )


def quick_summary(
    exported: str | os.PathLike = "mnist5k-z20", threads: int = 2, tsne_n: int = 500
) -> str:
    """A few-seconds side-by-side table: eager PyTorch (the model's own ``encode``) vs
    ONNX Runtime (fp32, int8) for the encoder at batch 1 and 4096, each in its own
    process, and vaefast's exact t-SNE vs scikit-learn's at N=tsne_n."""

    from sklearn.manifold import TSNE as SklearnTSNE

    from vaefast import data, runtime
    from vaefast.bench.report import format_seconds
    from vaefast.tsne import TSNE

    from vaefast.bench.recommend import time_in_process

    batches = (1, 4096)
    t = {
        kind: time_in_process(
            exported,
            "encoder",
            batches,
            threads,
            "eager" if kind == "eager" else "onnxruntime",
            "fp32" if kind == "eager" else kind,
        )[0]
        for kind in ("eager", "fp32", "int8")
    }
    rows = [
        "| task | eager PyTorch | ORT fp32 | ORT int8 | speed-up fp32 / int8 |",
        "|---|---|---|---|---|",
    ]
    for batch in batches:
        e = t["eager"][batch]
        rows.append(
            f"| encoder, batch {batch} | {format_seconds(e)} | "
            f"{format_seconds(t['fp32'][batch])} | {format_seconds(t['int8'][batch])} | "
            f"{e / t['fp32'][batch]:.2f}× / {e / t['int8'][batch]:.2f}× |"
        )
    vae = runtime.load(exported, providers="cpu", threads=threads, spin=False)
    mu = vae.encode(data.read("mnist5k").X[:tsne_n])[0]
    TSNE(max_iter=250, random_state=0, n_jobs=threads).fit(mu[:100])  # load the kernels
    t0 = time.perf_counter()
    ours = TSNE(random_state=0, n_jobs=threads).fit(mu)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = SklearnTSNE(method="exact", random_state=0, n_jobs=threads).fit(mu)
    t_ref = time.perf_counter() - t0
    rows += [
        "",
        "| t-SNE, N=%d | scikit-learn exact | vaefast exact | speed-up |" % tsne_n,
        "|---|---|---|---|",
        f"| time | {format_seconds(t_ref)} | {format_seconds(t_ours)} | {t_ref / t_ours:.0f}× |",
        f"| KL | {ref.kl_divergence_:.4f} | {ours.kl_divergence_:.4f} | |",
    ]
    return "\n".join(rows)
