"""Command line: thin argument parsing over the Python API; user errors exit 2 in one line.

Heavy libraries are imported inside each command so ``vaefast --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys

from vaefast.errors import VaefastError

DATA_HELP = ("data spec: mnist5k (default, embedded), digits, idx:PATH, npy:PATH, npz:PATH "
             "(see README)")


def _train(args: argparse.Namespace) -> None:
    from vaefast.train import train

    config = train(args.data, args.out, latent_dim=args.latent_dim, hidden_dim=args.hidden_dim,
                   epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                   force=args.force, max_train=args.max_train)
    last = config["history"][-1]
    print(f"wrote {args.out}: test loss {last['test_loss']:.2f} per sample after "
          f"{last['epoch']} epochs")


def _export(args: argparse.Namespace) -> None:
    from vaefast.export import export, format_report

    report = export(args.run, args.out, int8=args.int8, fp16=args.fp16, force=args.force)
    print(f"wrote {args.out}")
    print(format_report(report))


def _tsne(args: argparse.Namespace) -> None:
    import time

    import numpy as np

    from vaefast._io import atomic_file
    from vaefast.tsne import TSNE
    from vaefast.tsne.io import read_points

    X = read_points(args.input)
    t0 = time.perf_counter()
    tsne = TSNE(perplexity=args.perplexity, max_iter=args.max_iter, random_state=args.seed,
                n_jobs=args.threads, progress=not args.quiet).fit(X)
    seconds = time.perf_counter() - t0
    with atomic_file(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tsne.embedding_.astype(np.float32))
    print(f"wrote {args.out}: {len(X)} points, KL {tsne.kl_divergence_:.4f} after "
          f"{tsne.n_iter_ + 1} iterations in {seconds:.2f} s "
          f"({tsne.timings_['pairs_per_s']:.2e} pairs/s)")


def _embed(args: argparse.Namespace) -> None:
    from vaefast.embedding import embed

    stats = embed(args.model, args.input, args.out, batch_size=args.batch_size,
                  chunk_rows=args.chunk_rows, tsne=args.tsne, tsne_max=args.tsne_max,
                  seed=args.seed, scheduler=args.scheduler, workers=args.workers,
                  threads=args.threads, force=args.force, progress=not args.quiet)
    if stats.get("already_complete"):
        print(f"{args.out} is already complete ({stats['rows']} rows)")
        return
    rate = f", {stats['rows_per_s']:.0f} rows/s" if stats["rows_per_s"] else ""
    print(f"wrote {args.out}: {stats['rows']} rows ({stats['chunks_resumed']} chunks resumed) "
          f"in {stats['seconds']:.2f} s{rate}")


def _plot(args: argparse.Namespace) -> None:
    from vaefast.plot import render

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    written = render(args.kind, args.model, args.out, data=args.data,
                     max_points=args.max_points, formats=formats, seed=args.seed,
                     method=args.method, thumbnails=args.thumbnails, ellipses=args.ellipses,
                     embed=args.embed, dims=tuple(args.dims) if args.dims else None,
                     index=args.index, embeddings=args.embeddings)
    for path in written:
        print(f"wrote {path}")


def _bench_report(args: argparse.Namespace) -> None:
    from vaefast.bench import report

    print(f"wrote {report(args.results, args.out)}")


def build_parser() -> argparse.ArgumentParser:
    """The ``vaefast`` argument parser with one subcommand per stage of the pipeline."""
    parser = argparse.ArgumentParser(
        prog="vaefast",
        description="Train, export, embed, map (exact t-SNE) and plot VAE latent spaces.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train the PyTorch example's VAE into a run folder",
                       description="Train the official PyTorch example's VAE; writes "
                                   "model.safetensors, config.json, reconstruction.png, "
                                   "samples.png.")
    p.add_argument("--data", default="mnist5k", help=DATA_HELP)
    p.add_argument("--latent-dim", type=int, default=20, metavar="Z")
    p.add_argument("--hidden-dim", type=int, default=400, metavar="H")
    p.add_argument("--epochs", type=int, default=10, metavar="E")
    p.add_argument("--batch-size", type=int, default=128, metavar="B")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="use only the first N training rows (quick runs)")
    p.add_argument("--out", required=True, help="run folder to create, e.g. runs/NAME")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="export a run's encoder and decoder to ONNX, verified",
                       description="Export encoder.onnx (x -> mu, logvar) and decoder.onnx "
                                   "(z -> x_hat), verify them against the eager model, write "
                                   "model.json and export_report.json.")
    p.add_argument("run", help="run folder written by `vaefast train`")
    p.add_argument("--out", required=True, help="folder to create, e.g. exported/NAME")
    p.add_argument("--int8", action="store_true", help="also write dynamically quantized int8 "
                                                       "models")
    p.add_argument("--fp16", action="store_true", help="also write fp16 models (for GPUs)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export)

    p = sub.add_parser("embed", help="batch-embed a dataset through an exported encoder "
                                     "into zarr", description="Stream INPUT through the "
                       "exported encoder into OUT.zarr (mu, logvar, labels, optional tsne); "
                       "resumable: run the same command again after an interruption.")
    p.add_argument("model", help="exported model folder, e.g. exported/mnist5k-z20")
    p.add_argument("input", help=".npy, .npz, IDX (raw or .gz), a .zarr array, or a data spec")
    p.add_argument("--out", required=True, help="zarr store to write, e.g. out/emb.zarr")
    p.add_argument("--batch-size", type=int, default=8192, help="rows per ONNX Runtime call")
    p.add_argument("--chunk-rows", type=int, default=65536, help="rows per zarr chunk / task")
    p.add_argument("--tsne", action="store_true", help="add a 2-D exact t-SNE map of mu")
    p.add_argument("--tsne-max", type=int, default=10000,
                   help="exact t-SNE on all rows up to this N; above, on a seeded sample of "
                        "this size with the rest placed by transform")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None,
                   help="local (a dask LocalCluster) or tcp://HOST:PORT; default: this process")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--force", action="store_true",
                   help="replace a store started with another model, input or parameters")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)

    p = sub.add_parser("tsne", help="exact t-SNE (Numba) of latent means to 2-D",
                       description="scikit-learn's exact t-SNE, computed by Numba. INPUT is a "
                                   ".npy array [N, Z], or a .npz holding mu (or X).")
    p.add_argument("input", help="latent means: .npy, or .npz with mu / X")
    p.add_argument("--out", required=True, help="output .npy of the [N, 2] embedding")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tsne)

    p = sub.add_parser("plot", help="latent-space views from an exported model (no torch)",
                       description="KIND: latent, uncertainty, samples, manifold, "
                                   "reconstructions, diagnostics, or all (every view plus "
                                   "index.md).")
    p.add_argument("kind", metavar="KIND", help="latent | uncertainty | samples | manifold | "
                                                "reconstructions | diagnostics | all")
    p.add_argument("model", metavar="MODEL_DIR", help="exported model folder")
    p.add_argument("--data", default=None, help=DATA_HELP + "; default: the model's "
                                                            "training data")
    p.add_argument("--embeddings", default=None, metavar="STORE",
                   help="plot every row of a finished `vaefast embed` store (its μ, σ, labels "
                        "and t-SNE) instead of encoding --data")
    p.add_argument("--out", required=True, help="folder for the images")
    p.add_argument("--format", default="png", help="comma-separated: png, svg, pdf")
    p.add_argument("--method", default="tsne", choices=["tsne", "pca"],
                   help="2-D map of μ when Z > 2")
    p.add_argument("--thumbnails", type=int, default=0, metavar="N",
                   help="latent: draw N input images at their points")
    p.add_argument("--ellipses", type=int, default=200, metavar="N",
                   help="uncertainty (Z=2): ±σ ellipses for N inputs")
    p.add_argument("--embed", action="store_true", help="samples: place z in 2-D with their "
                                                        "images as markers")
    p.add_argument("--dims", type=int, nargs=2, default=None, metavar=("A", "B"),
                   help="manifold (Z>2): the two latent dims to traverse (default: highest KL)")
    p.add_argument("--index", type=int, default=0, help="manifold (Z>2): the input whose μ "
                                                        "the traversal starts from")
    p.add_argument("--max-points", type=int, default=5000,
                   help="use a seeded sample of at most this many inputs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_plot)

    p = sub.add_parser("bench", help="benchmark reports (run the suites with `make bench`)")
    bench = p.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    r = bench.add_parser("report", help="Markdown tables and PNG plots from pytest-benchmark "
                                        "JSON")
    r.add_argument("results", help="pytest-benchmark JSON, e.g. out/bench/results.json")
    r.add_argument("--out", required=True, help="folder for report.md and the plots")
    r.set_defaults(func=_bench_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaefast`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except VaefastError as e:
        print(f"vaefast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaefast {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
