"""The ``vaefast`` argument parser: one subparser per command, choices and help read from
the owning tables (``CHOICES``), defaults left to the API's signatures."""

from __future__ import annotations

import argparse
from vaefast.cli.commands import (
    _bench_recommend,
    _bench_report,
    _demo,
    _embed,
    _embeddings,
    _explore,
    _export,
    _plot,
    _train,
    _tsne,
)


DATA_HELP = "data spec (filled in from vaefast.data.KINDS)"


# choices read from the owning module's table when the option is given (and listed in
# --help), so that parsing stays free of heavy imports
CHOICES = {
    "arch": ("vaefast.models.architectures", "ARCHITECTURES"),
    "decoder_output": ("vaefast.export", "DECODER_OUTPUTS"),
    "dtype": ("vaefast.embedding.store", "DTYPES"),
    "to": ("vaefast.embedding.store", "EXPORT_FORMATS"),
    "method": ("vaefast.plot", "METHODS"),
    "part": ("vaefast.runtime.variants", "PARTS"),
    "precision": ("vaefast.runtime.engines", "PRECISIONS"),
}


def _table(dest: str) -> tuple[str, ...]:
    import importlib

    module, name = CHOICES[dest]
    return tuple(getattr(importlib.import_module(module), name))


def _choice(dest: str):
    """An argparse ``type`` accepting only the names in ``CHOICES[dest]``'s table."""

    def check(value: str) -> str:
        names = _table(dest)
        if value not in names:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {value!r} (choose from {', '.join(names)})"
            )
        return value

    check.__name__ = dest  # argparse names the type in its messages
    return check


def _help_for(api: str | None):
    """A help formatter for a command whose options default to the parameters of the
    ``module:function`` it calls: "(default X)" is read from that signature."""
    return type("Help", (_Help,), {"api": api})


class _Help(argparse.HelpFormatter):
    """Fills option help from the tables that own each choice (plot views, data specs,
    resize and EXIF rules, variants, engines, architectures, placements, CHOICES) and the
    defaults from the called function's signature, importing them only to print help."""

    api: str | None = None

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = self._from_table(action) or super()._get_help_string(action)
        default = None if action.required else self._signature_default(action.dest)
        if text is not None and default is not None and "default" not in text:
            text += f" (default {default})"
        return text

    def _signature_default(self, dest: str):
        import importlib
        import inspect

        if self.api is None:
            return None
        module, name = self.api.split(":")
        param = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get(
            dest
        )
        value = None if param is None else param.default
        if value is inspect.Parameter.empty or isinstance(value, bool) or value is None:
            return None
        return ",".join(value) if isinstance(value, tuple) else value

    def _from_table(self, action: argparse.Action) -> str | None:
        dest, text = action.dest, action.help or ""
        if dest == "model":
            from vaefast.shipped import describe

            return f"{text}, or a shipped model's name ({describe()})"
        if dest == "kind":
            from vaefast.plot import VIEWS

            return "; ".join(f"{n}: {v.caption}" for n, v in VIEWS.items()) + (
                "; all: every view plus index.md"
            )
        if DATA_HELP in text:
            from vaefast.data import spec_usage

            return text.replace(DATA_HELP, f"data spec: {spec_usage()} (see README)")
        if dest == "arch":
            from vaefast.models.architectures import ARCHITECTURES

            return "architecture: " + "; ".join(
                f"{n}: {a.describe}" for n, a in ARCHITECTURES.items()
            )
        if dest in CHOICES:
            return f"{text} ({' | '.join(_table(dest))})".lstrip()
        if dest == "formats":
            from vaefast.plot import FORMATS

            return f"{text} {', '.join(FORMATS)}"
        if dest == "memory_budget":
            from vaefast.runtime.memory import DEFAULT_BUDGET, MB

            return f"{text} (default {DEFAULT_BUDGET // MB:,} MB)"
        if dest in ("resize", "exif"):
            from vaefast.data.decode import EXIF, RESIZES

            lead, table = (
                ("how images become the model's size: ", RESIZES)
                if dest == "resize"
                else ("EXIF orientation: ", EXIF)
            )
            return lead + "; ".join(f"{n}: {what}" for n, what in table.items())
        if dest in ("variants", "variant"):
            from vaefast.runtime.variants import REFERENCE, VARIANTS

            lead = (
                "variants to write beside fp32, comma-separated: "
                if dest == "variants"
                else "exported model variant to run: "
            )
            return lead + "; ".join(
                f"{n}: {v.purpose}"
                for n, v in VARIANTS.items()
                if dest == "variant" or n != REFERENCE
            )
        if dest == "providers":
            from vaefast.runtime.engines import ENGINES

            return "what runs the model: " + "; ".join(
                f"{', '.join(e.providers)}: {e.describe}" for e in ENGINES.values()
            )
        if dest == "tsne_transform":
            from vaefast.tsne.transform import PLACEMENTS

            return "how --tsne places rows past --tsne-max: " + "; ".join(
                f"{n}: {p.describe}" for n, p in PLACEMENTS.items()
            )
        return None


def _option(p: argparse.ArgumentParser, flag: str, help: str = "", **kwargs) -> None:
    """An option defaulting to None (the called function's default applies), choices
    checked against its table where CHOICES names one."""
    dest = kwargs.get("dest") or flag.lstrip("-").replace("-", "_")
    if dest in CHOICES:
        kwargs["type"] = _choice(dest)
    p.add_argument(flag, default=None, help=help, **kwargs)


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    _option(p, "--variant", "(from vaefast.runtime.variants.VARIANTS)", metavar="NAME")
    _option(p, "--providers", "(from vaefast.runtime.engines.ENGINES)", metavar="NAME")
    _option(
        p,
        "--precision",
        "--providers openvino: inference precision (default bf16 where the CPU has AMX or "
        "AVX512_BF16, else f32)",
    )


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE (the PyTorch example's, or a conv one)",
        description="Train a VAE (--arch mlp: the official PyTorch example; conv: a small "
        "convolutional VAE); writes model.safetensors, config.json, reconstruction.png, "
        "samples.png.",
        formatter_class=_help_for("vaefast.models.train:train"),
    )
    _option(p, "--data", DATA_HELP)
    _option(p, "--arch", "(from vaefast.models.architectures.ARCHITECTURES)", metavar="ARCH")
    _option(p, "--latent-dim", "latent dimensions", type=int, metavar="Z")
    _option(p, "--hidden-dim", "hidden units (mlp)", type=int, metavar="H")
    _option(p, "--epochs", "passes over the training rows", type=int, metavar="E")
    _option(p, "--batch-size", "rows per step", type=int, metavar="B")
    _option(p, "--lr", "Adam's learning rate", type=float)
    _option(p, "--seed", "seed of weights and batches", type=int, metavar="S")
    _option(
        p, "--max-train", "use only the first N training rows (quick runs)", type=int, metavar="N"
    )
    p.add_argument("--out", required=True, help="run folder to create, e.g. runs/NAME")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_train)


def _add_model_source_options(p: argparse.ArgumentParser) -> None:
    """Where `export` finds the model: a run folder, the user's module or diffusers."""
    p.add_argument("run", nargs="?", default=None, help="run folder written by `vaefast train`")
    _option(
        p,
        "--module",
        "your own model: FUNCTION() returns a torch.nn.Module with encode(x) -> (mu, logvar) "
        "and decode(z) -> x_hat",
        metavar="FILE.py:FUNCTION",
    )
    _option(p, "--weights", "--module: .safetensors or a state dict (weights_only=True)")
    _option(
        p,
        "--diffusers",
        "a local diffusers AutoencoderKL folder (save_pretrained layout: config.json + "
        "diffusion_pytorch_model.safetensors); pixel ranges (-1, 1), size from its "
        "sample_size",
        metavar="DIR",
    )
    _option(
        p,
        "--input-shape",
        "--module: the shape of one input, e.g. 3,32,32 or 784; --diffusers: the example "
        "size (default: the config's sample_size)",
        metavar="C,H,W",
    )
    _option(
        p,
        "--input-range",
        "--module: the pixel range the model takes (default 0,1; e.g. -1,1); the runtime "
        "maps uint8 or [0, 1] images into it",
        metavar="LO,HI",
    )
    _option(
        p,
        "--output-range",
        "--module: the range decode returns (default 0,1; -1,1 for a Tanh decoder)",
        metavar="LO,HI",
    )
    _option(
        p,
        "--decoder-output",
        "--module: what decode returns (logits get a sigmoid in the graph)",
    )


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a VAE's encoder and decoder to ONNX, verified",
        description="Export encoder.onnx (x -> mu, logvar) and decoder.onnx (z -> x_hat), "
        "verify them against the eager model, write model.json and export_report.json. The "
        "model is a run folder from `vaefast train`, your own (--module my_vae.py:build_model "
        "--weights W --input-shape 3,32,32), or a local diffusers AutoencoderKL folder "
        "(--diffusers DIR).",
        formatter_class=_help_for("vaefast.export:export_module"),
    )
    _add_model_source_options(p)
    _option(
        p,
        "--data",
        "--module / --diffusers: verify on this data's test split (default: random "
        "inputs); " + DATA_HELP,
    )
    p.add_argument("--out", required=True, help="folder to create, e.g. exported/NAME")
    _option(p, "--variants", "(from vaefast.runtime.variants.VARIANTS)", metavar="NAME[,NAME]")
    p.add_argument("--int8", action="store_true", help="same as --variants int8")
    p.add_argument("--fp16", action="store_true", help="same as --variants fp16")
    _option(
        p,
        "--calibration",
        "calibrated variants (int8-static): calibrate on up to 256 images of this data spec "
        "(default: the export's example batch)",
        metavar="SPEC",
    )
    _option(
        p,
        "--memory-budget",
        "peak memory every export step keeps within, e.g. 4G or 6000M: verification and "
        "calibration batches are fitted to it; the batches and each step's peak RSS go in "
        "export_report.json",
        metavar="SIZE",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export)


def _embed_parser(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="batch-embed a dataset through an exported encoder into zarr",
        description="Stream INPUT through the exported encoder into OUT.zarr (mu, logvar, "
        "labels, optional tsne); resumable: run the same command again after an "
        "interruption.",
        formatter_class=_help_for("vaefast.embedding.pipeline:embed"),
    )
    p.add_argument("model", help="exported model folder")
    p.add_argument("input", help=DATA_HELP)
    p.add_argument("--out", required=True, help="zarr store to write, e.g. out/emb.zarr")
    _option(p, "--batch-size", "rows per call (default: fitted to the model)", type=int)
    _option(p, "--chunk-rows", "rows per zarr chunk / task (default: by row size)", type=int)
    _option(p, "--dtype", "how mu and logvar are stored (float16 halves the store)")
    p.add_argument("--tsne", action="store_true", help="add a 2-D exact t-SNE map of mu")
    _option(
        p,
        "--tsne-max",
        "exact t-SNE on all rows up to this N; above, on a seeded sample of this size with "
        "the rest placed by transform",
        type=int,
    )
    _option(p, "--tsne-transform", "(from vaefast.tsne.transform.PLACEMENTS)", metavar="METHOD")
    _option(p, "--seed", "seed of the t-SNE sample and start", type=int)
    _option(p, "--scheduler", "local (a dask LocalCluster) or tcp://HOST:PORT; default: here")
    _option(p, "--workers", "LocalCluster worker processes", type=int)
    _option(
        p,
        "--threads",
        "ONNX Runtime and t-SNE threads (default: all cores; on a tcp:// cluster, each "
        "worker's own)",
        type=int,
    )
    _option(p, "--resize", "(from decode.RESIZES)", metavar="RULE")
    _option(p, "--exif", "(from decode.EXIF)", metavar="RULE")
    p.add_argument(
        "--allow-empty-classes",
        action="store_true",
        help="an image folder's class folder without images keeps its label index "
        "(torchvision's allow_empty=True) instead of being refused",
    )
    _option(p, "--decode-workers", "image-decoding processes (default: the cores)", type=int)
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip images that cannot be decoded (rows NaN, ids and reasons recorded) "
        "instead of stopping at the first",
    )
    _add_runtime_options(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a store started with another model, input or parameters",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)


def _embeddings_parser(sub) -> None:
    p = sub.add_parser(
        "embeddings",
        help="write a finished embed store as parquet or .npy",
        description="Stream a finished `vaefast embed` store's rows (ids, labels, mu, sigma, "
        "t-SNE) to a parquet file or a folder of .npy files.",
        formatter_class=_help_for("vaefast.embedding.store:export"),
    )
    p.add_argument("store", help="a finished `vaefast embed` store")
    p.add_argument("--to", required=True, type=_choice("to"), help="output format")
    p.add_argument("out", help="output: a .parquet file, or a folder for .npy files")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument(
        "--with-images",
        action="store_true",
        help="parquet: add each row's input as a PNG thumbnail (column image, as Hugging Face "
        "datasets stores images; embedding-atlas shows it), read back from the store's input",
    )
    p.set_defaults(func=_embeddings)


def _tsne_parser(sub) -> None:
    p = sub.add_parser(
        "tsne",
        help="exact t-SNE (Numba) of latent means to 2-D",
        description="scikit-learn's exact t-SNE, computed by Numba. INPUT is a .npy array "
        "[N, Z], a .npz holding mu (or X), or a zarr array / finished `vaefast embed` store "
        "(its mu).",
        formatter_class=_help_for("vaefast.tsne.estimator:TSNE"),
    )
    p.add_argument("input", help="latent means: .npy, .npz with mu / X, or .zarr")
    p.add_argument("--out", required=True, help="output .npy of the [N, 2] embedding")
    _option(
        p,
        "--perplexity",
        "lowered to (N - 1) / 3 for small N, as embed and plot do",
        type=float,
    )
    _option(p, "--max-iter", "gradient descent iterations", type=int)
    p.add_argument("--seed", type=int, default=0, help="seed of the start: the same map each run")
    _option(p, "--threads", "Numba threads (default: all)", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tsne)


def _plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="latent-space views from an exported model (no torch)",
        description="KIND: one of the views listed under KIND, or all (every view plus index.md).",
        formatter_class=_help_for("vaefast.plot:render"),
    )
    p.add_argument("kind", metavar="KIND", help="(filled in from vaefast.plot.VIEWS)")
    p.add_argument("model", metavar="MODEL", help="exported model folder")
    _option(p, "--data", DATA_HELP + "; default: the model's training data")
    _option(
        p,
        "--embeddings",
        "plot every row of a finished `vaefast embed` store (its μ, σ, labels and t-SNE) "
        "instead of encoding --data",
        metavar="STORE",
    )
    p.add_argument("--out", required=True, help="folder for the images")
    _option(p, "--format", "comma-separated:", metavar="FORMATS", dest="formats")
    _option(p, "--method", "2-D map of μ when Z > 2, tsne unless given")
    _option(p, "--thumbnails", "latent: draw N input images at their points", type=int, metavar="N")
    _option(p, "--ellipses", "uncertainty (Z=2): ±σ ellipses for N inputs", type=int, metavar="N")
    p.add_argument(
        "--embed", action="store_true", help="samples: place z in 2-D with their images as markers"
    )
    _option(
        p,
        "--dims",
        "manifold (Z>2): the two latent dims to traverse (default: highest KL)",
        type=int,
        nargs=2,
        metavar=("A", "B"),
    )
    _option(p, "--index", "manifold (Z>2): the input whose μ the traversal starts from", type=int)
    _option(
        p, "--max-points", "use a seeded sample of at most this many inputs", type=int, metavar="N"
    )
    _option(p, "--seed", "seed of the sample and of random z", type=int)
    _option(p, "--threads", "ONNX Runtime and t-SNE threads", type=int)
    _add_runtime_options(p)
    p.set_defaults(func=_plot)


def _explore_parser(sub) -> None:
    p = sub.add_parser(
        "explore",
        help="a local web page over an embedding store: hover, decode, select (no torch)",
        description="Serve STORE (a finished `vaefast embed` store of MODEL, or one "
        "embedded first from --data) as an interactive map in the browser.",
        formatter_class=_help_for("vaefast.explore:serve"),
    )
    p.add_argument("model", metavar="MODEL", help="exported model folder")
    p.add_argument("store", metavar="STORE", help="embedding store (written first with --data)")
    _option(p, "--data", DATA_HELP + "; embed it (with --tsne) into STORE first, resumable")
    _option(p, "--host", "address to listen on; any but loopback needs a token")
    _option(p, "--port", "0: a free one", type=int)
    _option(p, "--token", "required on every request (default: random off loopback)")
    _option(p, "--max-points", "rows drawn at once; above, a sample and zoom fetches", type=int)
    _option(p, "--threads", "ONNX Runtime threads for decoding", type=int)
    p.add_argument("--no-browser", action="store_true", help="print the URL only")
    p.add_argument("--quiet", action="store_true", help="no progress bar while embedding")
    _add_runtime_options(p)
    p.set_defaults(func=_explore)


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job end to end on mnist5k: train, export, embed, map, plot, compare",
        description="Train the PyTorch example's VAE on mnist5k, export it to ONNX (verified), "
        "embed with an exact t-SNE, plot every view, print a side-by-side table and the "
        "command that opens the explorer. Everything is written under --out.",
        formatter_class=_help_for("vaefast.demo:run"),
    )
    _option(p, "--out", "folder for everything the demo writes", metavar="DIR")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a first look in about a minute: fewer epochs, a smaller map, no conv VAE",
    )
    p.set_defaults(func=_demo)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark reports (run the suites with `make bench`)")
    bench = p.add_subparsers(dest="bench_command", metavar="ACTION", required=True)
    r = bench.add_parser("report", help="Markdown tables and PNG plots from pytest-benchmark JSON")
    r.add_argument("results", help="pytest-benchmark JSON, e.g. out/bench/results.json")
    r.add_argument("--out", required=True, help="folder for report.md and the plots")
    r.set_defaults(func=_bench_report)
    r = bench.add_parser(
        "recommend",
        help="time every engine x variant x precision for MODEL at your batch size, each in "
        "its own process, and name the fastest that agrees with fp32",
        formatter_class=_help_for("vaefast.bench.recommend:recommend"),
    )
    r.add_argument("model", help="exported model folder")
    _option(r, "--batch", "rows per call", type=int)
    _option(r, "--part", "which half to time")
    _option(r, "--threads", "default: all cores", type=int)
    r.set_defaults(func=_bench_recommend)


COMMANDS = (
    _train_parser,
    _export_parser,
    _embed_parser,
    _embeddings_parser,
    _tsne_parser,
    _plot_parser,
    _explore_parser,
    _bench_parser,
    _demo_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``vaefast`` argument parser with one subcommand per stage of the pipeline."""
    parser = argparse.ArgumentParser(
        prog="vaefast",
        description="Train, export, embed, map (exact t-SNE) and plot VAE latent spaces.",
    )
    from vaefast import __version__

    parser.add_argument("--version", action="version", version=f"vaefast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser
