"""Per-product reasons for a recommendation list, shared by the service, campaigns and batch
recommendations.

* item-item models (a ``W`` matrix, score = history @ W): the history products that add most to
  the recommended product's score ("because of <title>");
* models with an ``explain(item_ids, history=...)`` method (``featgan``): the history products it
  names as closest ("close to <title>");
* the popularity ranking (unknown customers, or the ``pop`` model): "popular: bought by N customers";
* otherwise the model's score, stated as such (no invented reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reason:
    """One reason for one recommended product."""

    kind: str  # "history_item" | "popular" | "model"
    text: str
    product_id: str | None = None
    title: str | None = None
    contribution: float | None = None


def contributions(model: Any, hist: np.ndarray, rec: np.ndarray) -> np.ndarray | None:
    """(len(hist), len(rec)) contribution of each history item to each recommended item's score
    for item-item models (score = history @ W); None for other models."""
    W = getattr(model, "W", None)
    if W is None or len(hist) == 0 or len(rec) == 0:
        return None
    if sp.issparse(W):
        return np.asarray(W[hist][:, rec].toarray(), dtype=np.float64)
    return np.asarray(W[np.ix_(hist, rec)], dtype=np.float64)


def explain_items(
    model: Any,
    model_name: str,
    popularity: np.ndarray,
    top: np.ndarray,
    hist: np.ndarray,
    strategy: str,
    title_of: Callable[[str], str | None],
) -> list[list[Reason]]:
    """Reasons for each recommended item index in ``top`` (one list per item, never empty).

    ``hist``: the customer's history as item indices; ``strategy``: ``"popular"`` when the list is
    the popularity ranking, anything else when the model scored the history; ``title_of`` maps a
    product id to its display title (None if unknown).
    """
    top = np.asarray(top, dtype=np.int64)
    hist = np.asarray(hist, dtype=np.int64)
    ids = model.items.ids
    contrib = contributions(model, hist, top) if strategy != "popular" else None
    named: dict[str, list[tuple[str, float]]] = {}
    explain = getattr(model, "explain", None)
    if contrib is None and strategy != "popular" and callable(explain) and len(hist) and len(top):
        try:
            named = explain([str(ids[j]) for j in top], history=[str(x) for x in ids[hist]])
        except Exception:  # an explanation is optional: never fail the recommendation for it
            log.exception("%s.explain failed", model_name)
            named = {}
    out: list[list[Reason]] = []
    for col, j in enumerate(top):
        reasons: list[Reason] = []
        if strategy == "popular" or model_name == "pop":
            reasons.append(Reason(kind="popular", text=f"popular: bought by {int(popularity[j])} customers"))
        elif contrib is not None:
            c = contrib[:, col]
            for r in np.argsort(-c, kind="stable")[:3]:
                if c[r] <= 0:
                    break
                pid = str(ids[hist[r]])
                title = title_of(pid)
                reasons.append(Reason(kind="history_item", text=f"because of {title or pid}", product_id=pid,
                                      title=title, contribution=float(c[r])))
        for pid, similarity in named.get(str(ids[j]), [])[:3]:
            title = title_of(str(pid))
            reasons.append(Reason(kind="history_item", text=f"close to {title or pid}", product_id=str(pid),
                                  title=title, contribution=float(similarity)))
        if not reasons and contrib is not None:
            reasons.append(Reason(
                kind="model", text="no product of the history adds to its score (filler in the model's tie order)"
            ))
        if not reasons:
            reasons.append(Reason(
                kind="model",
                text=f"the {model_name} model's score for this history (this model gives no per-product reasons)",
            ))
        out.append(reasons)
    return out


def explain_lists(
    bundle: Any, customers: Sequence[str], item_idx: np.ndarray, known: np.ndarray,
    title_of: Callable[[str], str | None],
) -> list[list[str]]:
    """Per customer, one reason text (its reasons joined by "; ") per recommended product, for a
    block of lists (``item_idx`` rows, -1 padded; ``known``: ranked by the model, not by
    popularity) of a loaded :class:`retailgan.serving.engine.ModelBundle`: batch recommendations
    and campaigns."""
    model = bundle.model
    uidx = model.users.index([str(c) for c in customers], missing="negative")
    out = []
    for r in range(len(customers)):
        top = item_idx[r][item_idx[r] >= 0].astype(np.int64)
        hist = bundle.seen_items(int(uidx[r])) if known[r] else np.zeros(0, dtype=np.int64)
        reasons = explain_items(model, bundle.name, bundle.popularity, top, hist,
                                "model" if known[r] else "popular", title_of)
        out.append(["; ".join(x.text for x in rs) for rs in reasons])
    return out
