"""What each command does: its arguments handed to the Python API (heavy libraries
imported inside each, so ``vaefast --help`` is instant; options passed on only when given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaefast.errors import VaefastError


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` the user gave (not None), as keyword arguments."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _train(args: argparse.Namespace) -> None:
    from vaefast.models.train import train

    config = train(
        out=args.out,
        force=args.force,
        **_given(
            args,
            "data",
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

    from vaefast.runtime.variants import parse_names

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
    from vaefast.embedding.points import read_points

    X = read_points(args.input)  # a bad input refused before Numba and scikit-learn load

    from vaefast.tsne import TSNE
    from vaefast.tsne.mapping import perplexity_for

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
    # scikit-learn's KL is its float max when no iteration past early exaggeration ran
    kl = tsne.kl_divergence_
    kl = f"KL {kl:.4f}" if kl < np.finfo(float).max else "KL not computed (early exaggeration only)"
    print(
        f"wrote {args.out}: {len(X)} points, {kl} after "
        f"{tsne.n_iter_ + 1} iterations in {seconds:.2f} s "
        f"({tsne.timings_['pairs_per_s']:.2e} pairs/s)"
    )


def _embed(args: argparse.Namespace) -> None:
    from vaefast.embedding.pipeline import embed

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
    from vaefast.embedding.store import export

    done = export(args.store, args.to, args.out, force=args.force, with_images=args.with_images)
    print(f"wrote {args.out}: {done['rows']} rows ({', '.join(done['columns'])})")


def _print_agreement(model: str, variant: str, providers: str | None = None) -> None:
    """How the variant, or the engine, agrees with ONNX Runtime fp32 (from the export
    report), printed before using it; nothing for the reference itself."""
    from vaefast.runtime import engines, manifest
    from vaefast.runtime.variants import REFERENCE
    from vaefast.runtime.variants import variant as variant_entry

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

    given = args.formats or ""
    formats = tuple(f.strip() for f in given.split(",") if f.strip())
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


def _explore(args: argparse.Namespace) -> None:
    import time
    import webbrowser

    from vaefast import explore

    if args.data is not None:
        from vaefast.embedding.pipeline import embed

        embed(args.model, args.data, args.store, tsne=True, progress=not args.quiet)
    elif not Path(args.store).exists():
        raise VaefastError(f"{args.store}: no such embedding store (give --data to embed one)")
    server = explore.serve(
        args.model,
        args.store,
        **_given(
            args,
            "host",
            "port",
            "token",
            "providers",
            "variant",
            "precision",
            "max_points",
            "threads",
        ),
    )
    print(f"vaefast explore: serving {args.store} at {server.url} (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        while server._thread.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("vaefast explore: stopped", file=sys.stderr)
    finally:
        server.close()


def _demo(args: argparse.Namespace) -> None:
    from vaefast.demo import run

    run(**_given(args, "out"), quick=args.quick)


def _bench_recommend(args: argparse.Namespace) -> None:
    from vaefast.bench.recommend import format_table, recommend

    result = recommend(args.model, **_given(args, "batch", "part", "threads"))
    print(format_table(result))
    if result["choice"] is None:
        raise VaefastError(
            "bench recommend: no recommendation from timings taken under load ("
            + "; ".join(result["under_load"])
            + "); run again when the machine is quiet"
        )


def _bench_report(args: argparse.Namespace) -> None:
    from vaefast.bench.report import report

    print(f"wrote {report(args.results, args.out)}")
