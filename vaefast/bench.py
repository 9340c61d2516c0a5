"""`vaefast bench report`: pytest-benchmark JSON -> Markdown tables and PNG plots."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from vaefast._io import atomic_file
from vaefast.errors import VaefastError


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The benchmarks of a pytest-benchmark JSON file (timed runs only)."""
    try:
        doc = json.loads(Path(path).read_text())
        benches = doc["benchmarks"]
    except FileNotFoundError:
        raise VaefastError(f"{path} not found; run `make bench` first") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise VaefastError(f"{path} is not a pytest-benchmark JSON file") from None
    return [b for b in benches if b.get("stats")]


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(benches: list[dict[str, Any]]) -> str:
    """One table per group: median, ratio to the fastest, and the recorded figures."""
    groups: dict[str, list] = defaultdict(list)
    for b in benches:
        groups[b.get("group") or "ungrouped"].append(b)
    out = []
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda b: b["stats"]["median"])
        best = rows[0]["stats"]["median"]
        out += [f"### {group}", "", "| benchmark | median | × fastest | figures |",
                "|---|---|---|---|"]
        for b in rows:
            extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in b.get("extra_info", {}).items()
                              if k not in ("model", "part", "batch", "n", "threads"))
            out.append(f"| {b['name']} | {_fmt(b['stats']['median'])} | "
                       f"{b['stats']['median'] / best:.2f} | {extra} |")
        out.append("")
    return "\n".join(out)


def plots(benches: list[dict[str, Any]], out: Path) -> list[Path]:
    """Latency vs batch size per runtime, and t-SNE time vs N per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    series: dict[tuple, dict] = defaultdict(dict)
    for b in benches:
        info = b.get("extra_info", {})
        if "batch" in info:
            series[("latency", f"{info['model']} {info['part']}", info["runtime"])][
                info["batch"]] = b["stats"]["median"]
        elif "impl" in info:
            series[("tsne", "t-SNE", info["impl"])][info["n"]] = b["stats"]["median"]
    for kind, title in sorted({(k[0], k[1]) for k in series}):
        curves = {label: points for (k, t, label), points in sorted(series.items())
                  if (k, t) == (kind, title)}
        baseline = curves.get("eager" if kind == "latency" else "sklearn-exact")
        fig, axes = plt.subplots(1, 2 if baseline else 1, figsize=(10 if baseline else 5, 3.5),
                                 squeeze=False)
        for label, points in curves.items():
            xs = sorted(points)
            axes[0, 0].loglog(xs, [points[x] for x in xs], marker="o", label=label)
            if baseline:
                shared = [x for x in xs if x in baseline]
                axes[0, 1].semilogx(shared, [baseline[x] / points[x] for x in shared],
                                    marker="o", label=label)
        xlabel = "batch size" if kind == "latency" else "N points"
        axes[0, 0].set(xlabel=xlabel, ylabel="median seconds",
                       title=f"{title}: {'latency' if kind == 'latency' else 'time'}")
        axes[0, 0].legend(fontsize=8)
        if baseline:
            name = "eager PyTorch" if kind == "latency" else "scikit-learn exact"
            axes[0, 1].axhline(1.0, color="gray", lw=0.8)
            axes[0, 1].set(xlabel=xlabel, ylabel=f"speed-up over {name}",
                           title=f"{title}: speed-up over {name}")
            axes[0, 1].legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{kind}-{title.replace(' ', '-')}.png"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def report(results: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``report.md`` and plots for a pytest-benchmark JSON file into ``out``."""
    benches = load_results(results)
    if not benches:
        raise VaefastError(f"{results} holds no timed benchmarks (was it --benchmark-disable?)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = plots(benches, out)
    text = "# Benchmark report\n\n" + markdown(benches) + "\n" + "\n".join(
        f"![{p.stem}]({p.name})" for p in images) + "\n"
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(text)
    return out / "report.md"


def _median_seconds(fn, repeats: int, min_time: float = 0.2) -> float:
    """Median over ``repeats`` timings, each looping ``fn`` for at least ``min_time`` / repeats."""
    import time

    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(min_time / repeats / once))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    return sorted(samples)[len(samples) // 2]


def quick_summary(exported: str | os.PathLike = "exported/mnist5k-z20", threads: int = 2,
                  tsne_n: int = 500) -> str:
    """A few-seconds side-by-side table: eager PyTorch vs ONNX Runtime (fp32, int8) for the
    encoder at batch 1 and 4096, and vaefast's exact t-SNE vs scikit-learn's at N=tsne_n."""
    import time

    import numpy as np
    import torch
    from sklearn.manifold import TSNE as SklearnTSNE

    from vaefast import data, runtime
    from vaefast.export import load_eager
    from vaefast.tsne import TSNE

    torch.set_num_threads(threads)
    eager = load_eager(exported)
    ort = {v: runtime.load(exported, providers="cpu", threads=threads, spin=False, variant=v)
           for v in ("fp32", "int8")}
    X = data.load("mnist5k").X_test
    rows = ["| task | eager PyTorch | ORT fp32 | ORT int8 | speed-up fp32 / int8 |",
            "|---|---|---|---|---|"]
    for batch in (1, 4096):
        x = np.ascontiguousarray(np.resize(X, (batch, X.shape[1])))
        xt = torch.from_numpy(x)

        def run_eager():
            with torch.inference_mode():
                eager.encode(xt)
        t_eager = _median_seconds(run_eager, 7)
        t = {v: _median_seconds(lambda v=v: ort[v].encode(x, batch_size=batch), 7) for v in ort}
        rows.append(f"| encoder, batch {batch} | {_fmt(t_eager)} | {_fmt(t['fp32'])} | "
                    f"{_fmt(t['int8'])} | {t_eager / t['fp32']:.2f}× / "
                    f"{t_eager / t['int8']:.2f}× |")
    mu = ort["fp32"].encode(data.read("mnist5k").X[:tsne_n])[0]
    TSNE(max_iter=250, random_state=0, n_jobs=threads).fit(mu[:100])  # load the kernels
    t0 = time.perf_counter()
    ours = TSNE(random_state=0, n_jobs=threads).fit(mu)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = SklearnTSNE(method="exact", random_state=0, n_jobs=threads).fit(mu)
    t_ref = time.perf_counter() - t0
    rows += ["", "| t-SNE, N=%d | scikit-learn exact | vaefast exact | speed-up |" % tsne_n,
             "|---|---|---|---|",
             f"| time | {_fmt(t_ref)} | {_fmt(t_ours)} | {t_ref / t_ours:.0f}× |",
             f"| KL | {ref.kl_divergence_:.4f} | {ours.kl_divergence_:.4f} | |"]
    return "\n".join(rows)
