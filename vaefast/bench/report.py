"""`vaefast bench report`: pytest-benchmark JSON -> Markdown tables and PNG plots."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from vaefast.atomic import atomic_file
from vaefast.bench.contention import OTHERS_LIMIT, STEAL_LIMIT, under_load
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


def format_seconds(seconds: float) -> str:
    """Milliseconds below one second, else seconds."""
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def per_call(bench: dict[str, Any]) -> float:
    """Median seconds of one call: pytest-benchmark times rounds, and a round of a latency
    benchmark holds ``calls_per_round`` calls."""
    return bench["stats"]["median"] / bench.get("extra_info", {}).get("calls_per_round", 1)


def _figure(key: str, value: Any) -> str:
    if key == "contention":
        others, stolen = value.get("others_share", 0), value.get("steal_share", 0)
        return f"others busy {others:.0%}, stolen {stolen:.0%}"
    if isinstance(value, dict) and "median" in value:  # a ratio with its spread over rounds
        return (
            f"{key}={value['median']:.2f}× (IQR {value['q1']:.2f}–{value['q3']:.2f}, "
            f"range {value['min']:.2f}–{value['max']:.2f})"
        )
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def markdown(benches: list[dict[str, Any]]) -> str:
    """One table per group: median (per call where rounds hold several), ratio to the
    fastest with its spread (the ratio of quartiles: slowest-plausible to
    fastest-plausible), and the recorded figures. Results taken under load are marked and
    listed under their table."""
    groups: dict[str, list] = defaultdict(list)
    for b in benches:
        groups[b.get("group") or "ungrouped"].append(b)
    out = []
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda b: b["stats"]["median"])
        best = rows[0]["stats"]
        out += [
            f"### {group}",
            "",
            "| benchmark | median | rounds | × fastest (quartile spread) | figures |",
            "|---|---|---|---|---|",
        ]
        for b in rows:
            st = b["stats"]
            ratio = f"{st['median'] / best['median']:.2f}"
            if best["q3"] > 0 and best["q1"] > 0:
                ratio += f" ({st['q1'] / best['q3']:.2f}–{st['q3'] / best['q1']:.2f})"
            extra = ", ".join(
                _figure(k, v)
                for k, v in b.get("extra_info", {}).items()
                if k not in ("model", "part", "batch", "n", "threads")
            )
            name = f"⚠ {b['name']}" if under_load(b.get("extra_info", {})) else b["name"]
            out.append(
                f"| {name} | {format_seconds(per_call(b))} | {st['rounds']} | {ratio} | {extra} |"
            )
        loaded = [b["name"] for b in rows if under_load(b.get("extra_info", {}))]
        if loaded:
            out += [
                "",
                f"⚠ taken under load (other processes kept more than {OTHERS_LIMIT:.0%} of the "
                f"cores busy, or more than {STEAL_LIMIT:.0%} was stolen): {', '.join(loaded)}. "
                "Measure again on a quiet machine before quoting these.",
            ]
        out.append("")
    return "\n".join(out)


def machine_header(path: str | os.PathLike) -> str:
    """The machine card a results file was measured on, as one line (or a warning)."""
    from vaefast.bench.machine import describe

    info = json.loads(Path(path).read_text()).get("machine_info", {})
    if "vaefast" not in info:
        return (
            f"Measured on {info.get('cpu', {}).get('brand_raw', 'an unrecorded CPU')} "
            "(no vaefast machine card in this file)."
        )
    return f"Measured on {describe(info['vaefast'])}."


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
                info["batch"]
            ] = per_call(b)
        elif "impl" in info and "beside" not in (b.get("group") or ""):  # not contention
            series[("tsne", "t-SNE", info["impl"])][info["n"]] = b["stats"]["median"]
    for kind, title in sorted({(k[0], k[1]) for k in series}):
        curves = {
            label: points
            for (k, t, label), points in sorted(series.items())
            if (k, t) == (kind, title)
        }
        baseline = curves.get("eager" if kind == "latency" else "sklearn-exact")
        fig, axes = plt.subplots(
            1, 2 if baseline else 1, figsize=(10 if baseline else 5, 3.5), squeeze=False
        )
        for label, points in curves.items():
            xs = sorted(points)
            axes[0, 0].loglog(xs, [points[x] for x in xs], marker="o", label=label)
            if baseline:
                shared = [x for x in xs if x in baseline]
                axes[0, 1].semilogx(
                    shared, [baseline[x] / points[x] for x in shared], marker="o", label=label
                )
        xlabel = "batch size" if kind == "latency" else "N points"
        axes[0, 0].set(
            xlabel=xlabel,
            ylabel="median seconds per call" if kind == "latency" else "median seconds",
            title=f"{title}: {'latency' if kind == 'latency' else 'time'}",
        )
        axes[0, 0].legend(fontsize=8)
        if baseline:
            name = "eager PyTorch" if kind == "latency" else "scikit-learn exact"
            axes[0, 1].axhline(1.0, color="gray", lw=0.8)
            axes[0, 1].set(
                xlabel=xlabel,
                ylabel=f"speed-up over {name}",
                title=f"{title}: speed-up over {name}",
            )
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
    figures = "\n".join(f"![{p.stem}]({p.name})" for p in images)
    text = f"# Benchmark report\n\n{machine_header(results)}\n\n{markdown(benches)}\n{figures}\n"
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(text)
    return out / "report.md"
