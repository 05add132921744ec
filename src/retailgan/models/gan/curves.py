"""Training curves of iterative models: ``curves.json`` and ``curves.png`` from ``model.history``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retailgan.fileio import atomic_write


def _clean(value: Any) -> Any:
    # JSON has no NaN / inf: write null instead.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_curves(history: Sequence[dict[str, float]], out_dir: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """Write the per-epoch losses and validation metrics to ``out_dir``; returns both paths.

    ``curves.json`` holds ``{"epochs": [...], "series": {name: [value or null, ...]}}`` (a value
    is null in epochs where it was not logged, e.g. validation every few epochs).
    ``curves.png`` plots the losses (left axis) and the validation metrics (right axis).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe in worker threads
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    names = sorted({k for h in history for k in h if k != "epoch"})
    series = {k: [_clean(float(h[k])) if k in h else None for h in history] for k in names}
    json_path, png_path = out / "curves.json", out / "curves.png"
    doc = json.dumps({"epochs": epochs, "series": series}, indent=1)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(doc, encoding="utf-8"))

    fig, ax = plt.subplots(figsize=(7, 4))
    val_ax = None
    for name in names:
        pts = [(e, v) for e, v in zip(epochs, series[name], strict=True) if v is not None]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        if name.startswith("val_"):
            val_ax = val_ax or ax.twinx()
            val_ax.plot(xs, ys, "k.-", label=name)
        else:
            ax.plot(xs, ys, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if val_ax is not None:
        val_ax.set_ylabel("validation")
        h2, l2 = val_ax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:  # below the axes, where it cannot hide a curve
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(labels), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return json_path, png_path
