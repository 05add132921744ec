"""Markdown tables and bar charts of evaluation results.

A *result dict* has the shape::

    {"model": "ease", "params": {...},
     "metrics": {"ndcg@20": 0.31, ...},
     "ci": {"ndcg@20": [0.30, 0.32], ...},          # optional
     "timings": {"fit_s": 1.2, "eval_s": 0.4}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retailgan.fileio import atomic_write

__all__ = ["plot_results", "results_table_markdown"]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    v = float(value)
    return "n/a" if np.isnan(v) else f"{v:.{digits}f}"


def results_table_markdown(results: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """GitHub markdown table: one row per model, one column per metric, then
    ``fit_s`` and ``eval_s``.

    Metric values have 4 decimals, followed by ``[lo, hi]`` when the result has
    a CI for that metric; seconds have 2 decimals; missing values are ``n/a``.
    """
    header = ["model", *metrics, "fit_s", "eval_s"]
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for res in results:
        vals = res.get("metrics", {})
        cis = res.get("ci") or {}
        timings = res.get("timings") or {}
        cells = [_cell(res.get("model", "?"))]
        for m in metrics:
            cell = _fmt(vals.get(m), 4)
            if m in cis and cis[m] is not None and cell != "n/a":
                lo, hi = cis[m]
                cell += f" [{_fmt(lo, 4)}, {_fmt(hi, 4)}]"
            cells.append(cell)
        cells += [_fmt(timings.get("fit_s"), 2), _fmt(timings.get("eval_s"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(
    results: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    out_png: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Grouped bar chart (groups = metrics, one bar per model) saved as PNG.

    Bars whose result carries a CI for the metric get asymmetric error bars
    (``[lo, hi]``). Uses the Agg canvas directly (no pyplot global state) and
    writes atomically: a temporary file in the target directory is renamed
    over ``out_png`` with ``os.replace`` only once fully written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not metrics:
        raise ValueError("metrics must not be empty")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)

    n_models, n_metrics = len(results), len(metrics)
    fig = Figure(figsize=(min(20.0, max(6.0, 2.0 + 0.45 * n_metrics * max(n_models, 1))), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n_metrics, dtype=float)
    width = 0.8 / max(n_models, 1)
    for j, res in enumerate(results):
        vals = res.get("metrics", {})
        cis = res.get("ci") or {}
        heights = np.array([float(vals.get(m, np.nan)) for m in metrics])
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, np.nan_to_num(heights), width, label=str(res.get("model", f"model {j}")))
        with_ci = [i for i, m in enumerate(metrics) if cis.get(m) is not None]
        if with_ci:
            lo = np.array([float(cis[metrics[i]][0]) for i in with_ci])
            hi = np.array([float(cis[metrics[i]][1]) for i in with_ci])
            h = heights[with_ci]
            yerr = np.vstack([np.clip(h - lo, 0, None), np.clip(hi - h, 0, None)])
            ax.errorbar(pos[with_ci], h, yerr=yerr, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels(list(metrics), rotation=30, ha="right")
    ax.set_ylabel("value (95% CI where given)")
    if title:
        ax.set_title(title)
    if n_models:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)

    return atomic_write(out, write)
