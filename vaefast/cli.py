"""Command line: thin argument parsing over the Python API; user errors exit 2 in one line.

Heavy libraries are imported inside each command so ``vaefast --help`` is instant.
Options default to None and are passed on only when given, so each function's
signature is the one source of its defaults.
"""

from __future__ import annotations

import argparse
import sys

from vaefast.errors import VaefastError

DATA_HELP = "data spec (filled in from vaefast.data.KINDS)"


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` the user gave (not None), as keyword arguments."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _train(args: argparse.Namespace) -> None:
    from vaefast.train import train

    config = train(
        args.data,
        args.out,
        force=args.force,
        **_given(
            args,
            "arch",
            "latent_dim",
            "hidden_dim",
            "epochs",
            "seed",
            "batch_size",
            "lr",
            "max_train",
        ),
    )
    last = config["history"][-1]
    print(
        f"wrote {args.out}: {config['model']['arch']} VAE, test loss "
        f"{last['test_loss']:.2f} per sample after {last['epoch']} epochs"
    )


def _numbers(text: str | None, flag: str, what: str, kind=int) -> tuple | None:
    """``"3,32,32"`` -> (3, 32, 32); a one-line error naming the flag otherwise."""
    if text is None:
        return None
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise VaefastError(f"{flag} {text!r}: write it as {what}") from None


def _export(args: argparse.Namespace) -> None:
    from vaefast.export import check_range, export, export_diffusers, export_module, format_report

    from vaefast.variants import parse_names

    names = parse_names(args.variants) + tuple(
        n for n, alias in (("int8", args.int8), ("fp16", args.fp16)) if alias
    )
    options = dict(
        variants=tuple(dict.fromkeys(names)),
        force=args.force,
        **_given(args, "calibration", "memory_budget"),
    )
    shape = _numbers(args.input_shape, "--input-shape", "C,H,W or D")
    ranges = {
        name: check_range(_numbers(getattr(args, name), flag, "LO,HI", float), flag)
        for name, flag in (("input_range", "--input-range"), ("output_range", "--output-range"))
        if getattr(args, name) is not None
    }
    sources = [name for name in ("run", "module", "diffusers") if getattr(args, name)]
    if len(sources) > 1:
        raise VaefastError(
            f"give one model: a run folder, --module or --diffusers (got {' and '.join(sources)})"
        )
    if args.module:
        if not shape:
            raise VaefastError("--module needs --input-shape, e.g. 3,32,32")
        report = export_module(
            args.module,
            args.out,
            input_shape=shape,
            weights=args.weights,
            **_given(args, "data", "decoder_output"),
            **ranges,
            **options,
        )
    elif args.diffusers:
        for flag in ("weights", "decoder_output", "input_range", "output_range"):
            if getattr(args, flag) is not None:
                raise VaefastError(
                    f"--{flag.replace('_', '-')} does not go with --diffusers: "
                    "the folder's config says it"
                )
        report = export_diffusers(
            args.diffusers, args.out, input_shape=shape, **_given(args, "data"), **options
        )
    elif args.run:
        for flag in (
            "weights",
            "input_shape",
            "data",
            "decoder_output",
            "input_range",
            "output_range",
        ):
            if getattr(args, flag) is not None:
                raise VaefastError(
                    f"--{flag.replace('_', '-')} goes with --module; a run folder records it"
                )
        report = export(args.run, args.out, **options)
    else:
        raise VaefastError(
            "give a run folder from `vaefast train`, --module FILE.py:FN or --diffusers DIR"
        )
    print(f"wrote {args.out}")
    print(format_report(report))


def _tsne(args: argparse.Namespace) -> None:
    import time

    import numpy as np

    from vaefast.atomic import atomic_file
    from vaefast.points import read_points
    from vaefast.tsne import TSNE

    from vaefast.tsne.mapping import perplexity_for

    X = read_points(args.input)
    t0 = time.perf_counter()
    perplexity = args.perplexity if args.perplexity is not None else perplexity_for(len(X))
    tsne = TSNE(
        progress=not args.quiet,
        perplexity=perplexity,
        **_given(args, "max_iter"),
        random_state=args.seed,
        n_jobs=args.threads,
    ).fit(X)
    seconds = time.perf_counter() - t0
    with atomic_file(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tsne.embedding_.astype(np.float32))
    print(
        f"wrote {args.out}: {len(X)} points, KL {tsne.kl_divergence_:.4f} after "
        f"{tsne.n_iter_ + 1} iterations in {seconds:.2f} s "
        f"({tsne.timings_['pairs_per_s']:.2e} pairs/s)"
    )


def _embed(args: argparse.Namespace) -> None:
    from vaefast.embedding import embed

    _print_agreement(args.model, args.variant or "fp32", args.providers)
    stats = embed(
        args.model,
        args.input,
        args.out,
        tsne=args.tsne,
        force=args.force,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
        **_given(
            args,
            "batch_size",
            "chunk_rows",
            "dtype",
            "tsne_max",
            "tsne_transform",
            "seed",
            "scheduler",
            "workers",
            "threads",
            "variant",
            "providers",
            "precision",
            "resize",
            "exif",
            "decode_workers",
        ),
        allow_empty_classes=args.allow_empty_classes,
    )
    if stats.get("already_complete"):
        print(f"{args.out} is already complete ({stats['rows']} rows)")
        return
    rate = f", {stats['rows_per_s']:.0f} rows/s" if stats["rows_per_s"] else ""
    line = (
        f"wrote {args.out}: {stats['rows']} rows ({stats['chunks_resumed']} chunks resumed); "
        f"encode {stats['seconds']:.2f} s{rate} ({stats['variant']} on "
        f"{stats['providers'][0]})"
    )
    t = stats.get("tsne")
    if t:
        fit = (
            f"t-SNE reference fit {t['fit_s']:.1f} s ({t['reference_rows']} rows)"
            if "reference_rows" in t
            else f"t-SNE reference fit resumed ({t['fit_s']:.1f} s)"
        )
        line += f"; {fit}"
        if t["placed_rows"]:
            line += (
                f"; placement {t['place_s']:.1f} s ({t['placed_rows']} rows, "
                f"{t['points_per_s']:.0f} points/s)"
            )
        line += f"; total {stats['seconds'] + t['fit_s'] + t['place_s']:.1f} s"
    print(line)
    if stats["skipped"]:
        print(
            f"skipped {stats['skipped']} file(s) that could not be decoded (their rows are "
            f"NaN; ids and reasons in {args.out}/skipped)"
        )
    if stats["hidden"]:
        print(
            f"note: {stats['hidden']} hidden file(s) or folder(s) (names starting with "
            "'.') were skipped"
        )
    if stats["upscaled"]:
        print(f"note: {stats['upscaled']} image(s) smaller than the model's input were upscaled")


def _embeddings(args: argparse.Namespace) -> None:
    from vaefast.store import export

    done = export(args.store, args.to, args.out, force=args.force)
    print(f"wrote {args.out}: {done['rows']} rows ({', '.join(done['columns'])})")


def _print_agreement(model: str, variant: str, providers: str | None = None) -> None:
    """How the variant, or the engine, agrees with ONNX Runtime fp32 (from the export
    report), printed before using it; nothing for the reference itself."""
    from vaefast import engines, manifest
    from vaefast.variants import REFERENCE
    from vaefast.variants import variant as variant_entry

    variant_entry(variant)  # an unknown name: refused with the table's names
    key = engines.engine_for(providers or engines.DEFAULT_PROVIDERS).report_key
    if variant == REFERENCE and key is None:
        return
    meta = manifest.read_model_json(model)
    if "variants" in meta and variant not in meta["variants"]:
        return  # runtime.load refuses it next, naming the variants the model has
    name, r = manifest.agreement(manifest.read_report(model), variant, key)
    if r is None:
        print(f"note: {model}'s {manifest.REPORT_JSON} has no {name} figures", file=sys.stderr)
        return
    print(
        f"{name} against fp32 (export report): kNN@10 overlap "
        f"{r['knn10_overlap_vs_fp32']:.3f}, μ rel error {r['mu_rel_error']:.2e}, "
        f"reconstruction PSNR {r['recon_psnr_db_vs_fp32']:.1f} dB",
        file=sys.stderr,
    )


def _plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; the library leaves notebooks' backends alone
    from vaefast.plot import render

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip()) if args.format else None
    written = render(
        args.kind,
        args.model,
        args.out,
        **_given(
            args,
            "data",
            "max_points",
            "seed",
            "method",
            "thumbnails",
            "ellipses",
            "index",
            "embeddings",
            "variant",
            "providers",
            "threads",
            "precision",
        ),
        **({"formats": formats} if formats else {}),
        **({"embed": True} if args.embed else {}),
        **({"dims": tuple(args.dims)} if args.dims else {}),
    )
    for path in written:
        print(f"wrote {path}")


def _bench_recommend(args: argparse.Namespace) -> None:
    from vaefast.recommend import format_table, recommend

    print(format_table(recommend(args.model, **_given(args, "batch", "part", "threads"))))


def _bench_report(args: argparse.Namespace) -> None:
    from vaefast.bench import report

    print(f"wrote {report(args.results, args.out)}")


class _RegistryHelp(argparse.HelpFormatter):
    """Lists the entries of a registry (plot views, t-SNE placements) in an option's help,
    importing the registry only to print this help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "kind":
            from vaefast.plot import VIEWS

            return (
                "; ".join(f"{name}: {view.caption}" for name, view in VIEWS.items())
                + "; all: every view plus index.md"
            )
        if DATA_HELP in (action.help or ""):
            from vaefast.data import spec_usage

            return action.help.replace(DATA_HELP, f"data spec: {spec_usage()} (see README)")
        if action.dest in ("resize", "exif"):
            from vaefast.data.decode import EXIF, RESIZES

            lead, table = (
                ("how images become the model's size: ", RESIZES)
                if action.dest == "resize"
                else ("EXIF orientation: ", EXIF)
            )
            return (
                lead
                + "; ".join(f"{name}: {what}" for name, what in table.items())
                + f" (default {next(iter(table))})"
            )
        if action.dest in ("variants", "variant"):
            from vaefast.variants import REFERENCE, VARIANTS

            lead = (
                "variants to write beside fp32, comma-separated: "
                if action.dest == "variants"
                else "exported model variant to run (default fp32): "
            )
            return lead + "; ".join(
                f"{name}: {v.purpose}"
                for name, v in VARIANTS.items()
                if action.dest == "variant" or name != REFERENCE
            )
        if action.dest == "providers":
            from vaefast.engines import ENGINES

            return "what runs the model: " + "; ".join(
                f"{', '.join(e.providers)}: {e.describe}" for e in ENGINES.values()
            )
        if action.dest == "arch":
            from vaefast.model import ARCHITECTURES

            return "architecture (default mlp): " + ", ".join(ARCHITECTURES)
        if action.dest == "tsne_transform":
            from vaefast.tsne.transform import PLACEMENTS

            return "how --tsne places rows past --tsne-max: " + "; ".join(
                f"{name}: {p.describe}" for name, p in PLACEMENTS.items()
            )
        return super()._get_help_string(action)


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variant", default=None, metavar="NAME", help="(from vaefast.variants.VARIANTS)"
    )
    p.add_argument(
        "--providers", default=None, metavar="NAME", help="(from vaefast.engines.ENGINES)"
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["bf16", "f32"],
        help="--providers openvino: inference precision (default bf16 where the "
        "CPU has AMX or AVX512_BF16, else f32)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``vaefast`` argument parser with one subcommand per stage of the pipeline."""
    parser = argparse.ArgumentParser(
        prog="vaefast",
        description="Train, export, embed, map (exact t-SNE) and plot VAE latent spaces.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train a VAE (the PyTorch example's, or a conv one)",
        description="Train a VAE (--arch mlp: the official PyTorch example; "
        "conv: a small convolutional VAE); writes "
        "model.safetensors, config.json, reconstruction.png, "
        "samples.png.",
        formatter_class=_RegistryHelp,
    )
    p.add_argument("--data", default="mnist5k", help=DATA_HELP)
    p.add_argument(
        "--arch", default=None, metavar="ARCH", help="(from vaefast.model.ARCHITECTURES)"
    )
    p.add_argument("--latent-dim", type=int, default=None, metavar="Z", help="default 20")
    p.add_argument("--hidden-dim", type=int, default=None, metavar="H", help="default 400")
    p.add_argument("--epochs", type=int, default=None, metavar="E", help="default 10")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="default 128")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="default 1")
    p.add_argument(
        "--max-train",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N training rows (quick runs)",
    )
    p.add_argument("--out", required=True, help="run folder to create, e.g. runs/NAME")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "export",
        help="export a VAE's encoder and decoder to ONNX, verified",
        description="Export encoder.onnx (x -> mu, logvar) and decoder.onnx "
        "(z -> x_hat), verify them against the eager model, write "
        "model.json and export_report.json. The model is a run "
        "folder from `vaefast train`, your own (--module "
        "my_vae.py:build_model --weights W --input-shape 3,32,32), "
        "or a local diffusers AutoencoderKL folder (--diffusers "
        "DIR).",
        formatter_class=_RegistryHelp,
    )
    p.add_argument("run", nargs="?", default=None, help="run folder written by `vaefast train`")
    p.add_argument(
        "--module",
        default=None,
        metavar="FILE.py:FUNCTION",
        help="your own model: FUNCTION() returns a torch.nn.Module with "
        "encode(x) -> (mu, logvar) and decode(z) -> x_hat",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="--module: .safetensors or a state dict (loaded with weights_only=True)",
    )
    p.add_argument(
        "--diffusers",
        default=None,
        metavar="DIR",
        help="a local diffusers AutoencoderKL folder (save_pretrained layout: "
        "config.json + diffusion_pytorch_model.safetensors); pixel ranges "
        "(-1, 1), size from its sample_size",
    )
    p.add_argument(
        "--input-shape",
        default=None,
        metavar="C,H,W",
        help="--module: the shape of one input, e.g. 3,32,32 or 784; --diffusers: "
        "the example size (default: the config's sample_size)",
    )
    p.add_argument(
        "--input-range",
        default=None,
        metavar="LO,HI",
        help="--module: the pixel range the model takes (default 0,1; e.g. -1,1); "
        "the runtime maps uint8 or [0, 1] images into it",
    )
    p.add_argument(
        "--output-range",
        default=None,
        metavar="LO,HI",
        help="--module: the range decode returns (default 0,1; -1,1 for a Tanh decoder)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="--module / --diffusers: verify on this data's "
        "test split (default: random inputs); " + DATA_HELP,
    )
    p.add_argument(
        "--decoder-output",
        default=None,
        choices=["probs", "logits"],
        help="--module: what decode returns (logits get a sigmoid in the graph)",
    )
    p.add_argument("--out", required=True, help="folder to create, e.g. exported/NAME")
    p.add_argument(
        "--variants", default=None, metavar="NAME[,NAME]", help="(from vaefast.variants.VARIANTS)"
    )
    p.add_argument("--int8", action="store_true", help="same as --variants int8")
    p.add_argument("--fp16", action="store_true", help="same as --variants fp16")
    p.add_argument(
        "--calibration",
        default=None,
        metavar="SPEC",
        help="calibrated variants (int8-static): calibrate on up to 256 images of "
        "this data spec (default: the export's example batch)",
    )
    p.add_argument(
        "--memory-budget",
        default=None,
        metavar="SIZE",
        help="peak memory every export step keeps within, e.g. 4G or 6000M "
        "(default 4G): verification and calibration batches are fitted to "
        "it; the batches and each step's peak RSS go in export_report.json",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "embed",
        help="batch-embed a dataset through an exported encoder into zarr",
        description="Stream INPUT through the "
        "exported encoder into OUT.zarr (mu, logvar, labels, optional tsne); "
        "resumable: run the same command again after an interruption.",
        formatter_class=_RegistryHelp,
    )
    p.add_argument("model", help="exported model folder, e.g. exported/mnist5k-z20")
    p.add_argument("input", help=DATA_HELP)
    p.add_argument("--out", required=True, help="zarr store to write, e.g. out/emb.zarr")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per ONNX Runtime call (default: 8192, fewer for large images)",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per zarr chunk / task (default: 65536, fewer for large images)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float16"],
        help="how mu and logvar are stored (default float32; float16 halves the store)",
    )
    p.add_argument("--tsne", action="store_true", help="add a 2-D exact t-SNE map of mu")
    p.add_argument(
        "--tsne-max",
        type=int,
        default=None,
        help="exact t-SNE on all rows up to this N (default 10000); above, on a "
        "seeded sample of this size with the rest placed by transform",
    )
    p.add_argument(
        "--tsne-transform",
        default=None,
        metavar="METHOD",
        help="(filled in from vaefast.tsne.transform.PLACEMENTS)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--scheduler",
        default=None,
        help="local (a dask LocalCluster) or tcp://HOST:PORT; default: this process",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="LocalCluster worker processes (default 2)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime and t-SNE threads (default: all cores; on a tcp:// "
        "cluster, each worker's own)",
    )
    p.add_argument("--resize", default=None, metavar="RULE", help="(from decode.RESIZES)")
    p.add_argument("--exif", default=None, metavar="RULE", help="(from decode.EXIF)")
    p.add_argument(
        "--allow-empty-classes",
        action="store_true",
        help="an image folder's class folder without images keeps its label "
        "index (torchvision's allow_empty=True) instead of being refused",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        help="processes decoding images (default: the cores available)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip images that cannot be decoded (rows NaN, ids and reasons "
        "recorded) instead of stopping at the first",
    )
    _add_runtime_options(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a store started with another model, input or parameters",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)

    p = sub.add_parser(
        "embeddings",
        help="write a finished embed store as parquet or .npy",
        description="Stream a finished `vaefast embed` store's rows (ids, "
        "labels, mu, sigma, t-SNE) to a parquet file or a folder of .npy "
        "files.",
    )
    p.add_argument("store", help="a finished `vaefast embed` store")
    p.add_argument("--to", required=True, choices=["parquet", "npy"])
    p.add_argument("out", help="output: a .parquet file, or a folder for .npy files")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_embeddings)

    p = sub.add_parser(
        "tsne",
        help="exact t-SNE (Numba) of latent means to 2-D",
        description="scikit-learn's exact t-SNE, computed by Numba. INPUT is a "
        ".npy array [N, Z], a .npz holding mu (or X), or a zarr "
        "array / finished `vaefast embed` store (its mu).",
    )
    p.add_argument("input", help="latent means: .npy, .npz with mu / X, or .zarr")
    p.add_argument("--out", required=True, help="output .npy of the [N, 2] embedding")
    p.add_argument(
        "--perplexity",
        type=float,
        default=None,
        help="default 30, lowered to (N - 1) / 3 for small N (as embed and plot)",
    )
    p.add_argument("--max-iter", type=int, default=None, help="default 1000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tsne)

    p = sub.add_parser(
        "plot",
        help="latent-space views from an exported model (no torch)",
        description="KIND: one of the views listed under KIND, or all (every view plus index.md).",
        formatter_class=_RegistryHelp,
    )
    p.add_argument("kind", metavar="KIND", help="(filled in from vaefast.plot.VIEWS)")
    p.add_argument("model", metavar="MODEL_DIR", help="exported model folder")
    p.add_argument("--data", default=None, help=DATA_HELP + "; default: the model's training data")
    p.add_argument(
        "--embeddings",
        default=None,
        metavar="STORE",
        help="plot every row of a finished `vaefast embed` store (its μ, σ, labels "
        "and t-SNE) instead of encoding --data",
    )
    p.add_argument("--out", required=True, help="folder for the images")
    p.add_argument("--format", default=None, help="comma-separated: png (default), svg, pdf")
    p.add_argument(
        "--method",
        default=None,
        choices=["tsne", "pca"],
        help="2-D map of μ when Z > 2 (default tsne)",
    )
    p.add_argument(
        "--thumbnails",
        type=int,
        default=None,
        metavar="N",
        help="latent: draw N input images at their points",
    )
    p.add_argument(
        "--ellipses",
        type=int,
        default=None,
        metavar="N",
        help="uncertainty (Z=2): ±σ ellipses for N inputs (default 200)",
    )
    p.add_argument(
        "--embed", action="store_true", help="samples: place z in 2-D with their images as markers"
    )
    p.add_argument(
        "--dims",
        type=int,
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="manifold (Z>2): the two latent dims to traverse (default: highest KL)",
    )
    p.add_argument(
        "--index",
        type=int,
        default=None,
        help="manifold (Z>2): the input whose μ the traversal starts from",
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="use a seeded sample of at most this many inputs (default 5000)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime and t-SNE threads")
    _add_runtime_options(p)
    p.set_defaults(func=_plot)

    p = sub.add_parser("bench", help="benchmark reports (run the suites with `make bench`)")
    bench = p.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    r = bench.add_parser("report", help="Markdown tables and PNG plots from pytest-benchmark JSON")
    r.add_argument("results", help="pytest-benchmark JSON, e.g. out/bench/results.json")
    r.add_argument("--out", required=True, help="folder for report.md and the plots")
    r.set_defaults(func=_bench_report)
    r = bench.add_parser(
        "recommend",
        help="time every engine x variant x precision for "
        "MODEL at your batch size, each in its own "
        "process, and name the fastest that agrees "
        "with fp32",
    )
    r.add_argument("model", help="exported model folder")
    r.add_argument("--batch", type=int, default=None, help="rows per call (default 1)")
    r.add_argument("--part", default=None, choices=["encoder", "decoder"])
    r.add_argument("--threads", type=int, default=None, help="default: all cores")
    r.set_defaults(func=_bench_recommend)
    return parser


INTERRUPTED = {
    "embed": "interrupted; the store keeps its finished chunks, run the same "
    "command again to resume"
}


RANGE_FLAGS = ("--input-range", "--output-range")


def _ranges_joined(argv: list[str]) -> list[str]:
    """``--input-range -1,1`` as ``--input-range=-1,1``: argparse would take ``-1,1`` for
    an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in RANGE_FLAGS and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaefast`` console script."""
    parser = build_parser()
    args = parser.parse_args(_ranges_joined(sys.argv[1:] if argv is None else argv))
    from vaefast.lifeline import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            args.func(args)
    except VaefastError as e:
        print(f"vaefast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (timeout, scancel, kubectl)
        print(
            f"vaefast {args.command}: "
            f"{INTERRUPTED.get(args.command, 'interrupted; nothing was written')}",
            file=sys.stderr,
        )
        return 128 + (15 if isinstance(e, Terminated) else 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
