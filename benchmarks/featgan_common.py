"""Shared helpers of the featgan benchmarks (featgan_retail.py, featgan_cold.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.splits import Split
from retailgan.evaluation.stats import paired_comparison
from retailgan.features.text import TextEncoder
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.featgan import FeatureGAN

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "docs" / "results" / "online-retail-temporal.json"
KS = (10, 20)


def ensure_store(store: Path) -> Path:
    if not store.exists():
        from retailgan.data.ingest import ingest

        ingest(store, REPO / "data" / "online-retail" / "online_retail.csv.gz", "online-retail")
    return store


def fit_featgan(s: Split, params: dict[str, Any], seed: int = 0) -> tuple[FeatureGAN, dict[str, Any]]:
    """Early stopping on validation (inner training part), then a refit on all of train."""
    probe = FeatureGAN(**params).fit(
        s.train_inner, TrainingOptions(seed=seed, validation=s.validation, validation_metric="ndcg@10")
    )
    best = max(int(probe.best_epoch), 1)
    val = max((h.get("val_ndcg@10", float("-inf")) for h in probe.history), default=float("nan"))
    final = FeatureGAN(**{**params, "epochs": best}).fit(s.train, TrainingOptions(seed=seed))
    info = {"best_epoch": best, "validation_ndcg@10": val, "fit_s": final.fit_seconds, "probe_fit_s": probe.fit_seconds}
    return final, info


def tfidf_knn_scores(
    titles: list[object], known: np.ndarray, history: sp.csr_matrix, users: np.ndarray, cand: np.ndarray
) -> np.ndarray:
    """content-kNN on raw TF-IDF title vectors (featgan's text encoder fitted on the ``known``
    products' titles, no SVD): per customer of ``users``, each candidate's largest cosine to a
    product of their ``history`` row; ``(len(users), len(cand))``, 0 for an empty history."""
    tfidf = TextEncoder(min_df=2).fit([titles[i] for i in known]).tfidf(titles).tocsr()
    out = np.zeros((len(users), len(cand)), np.float32)
    cand_t = tfidf[cand].T
    for r, u in enumerate(users):
        hist = history[u].indices
        if len(hist):
            out[r] = (tfidf[hist] @ cand_t).toarray().max(axis=0)
    return out


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired comparison of per-customer NDCG@10 (a - b): bootstrap CI, t-test, Wilcoxon."""
    pc = paired_comparison(a, b)
    return {
        "mean_diff_ndcg@10": round(pc.mean_diff, 4),
        "ci95": [round(pc.ci_low, 4), round(pc.ci_high, 4)],
        "p_ttest": float(f"{pc.p_ttest:.3g}"),
        "p_wilcoxon": float(f"{pc.p_wilcoxon:.3g}"),
        "n": pc.n,
    }


def summary(result: Any) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in result.summary().items()}


VARIANTS: dict[str, dict[str, Any]] = {
    "featgan": {},
    "featgan, no adversarial term": {"adversarial": False},
}


def variant_params(label: str) -> dict[str, Any]:
    """A named variant, or ``"label: {json parameters}"`` for an ad-hoc one."""
    if label in VARIANTS:
        return VARIANTS[label]
    name, sep, spec = label.partition(":")
    if not sep:
        raise SystemExit(f"unknown variant {label!r}: one of {list(VARIANTS)} or 'label: {{json}}'")
    return json.loads(spec)
