"""The feature GAN on UCI Online Retail: accuracy beside the baselines, ablation, cold start, slates, speed.

Parts (``--parts``, comma-separated):

* ``main``: temporal split, seed 0. Baselines are fitted on the training part with the
  parameters chosen by the 30-trial searches of docs/results/online-retail-temporal.json (read
  from that file). Each featgan variant (``--variants``: default, without the adversarial term,
  mixture training) is fitted on the inner training part with early stopping on validation
  NDCG@10, then refitted on the whole training part for the chosen number of epochs, and
  evaluated once on test (full ranking, training items excluded), as ``retailgan compare`` does,
  on all customers with test purchases and on those with a training history.
* ``slates``: every featgan variant, ``recommend(samples=S, diversity=lam)`` for every evaluated
  customer: NDCG@10, intra-list diversity@10 (cosine distance over the products' training
  buyers, as ``compare`` reports it, and over the text block of the feature space) and coverage.
* ``speed``: median wall time of ``recommend`` for one customer (exact search), S = 1 and S = 5,
  on the first variant.
* ``cold``: a cold-start split. 20 % of the products (seeded) are declared new: all their pairs
  are removed from the training part. Test: the test-period purchases of new products by
  customers with a training history; candidates: the new products only. featgan against
  content-kNN (each new product scored by its largest text cosine to the customer's history, the
  same TF-IDF/SVD text vectors), popularity among the new products in the test period with the
  evaluated customer's own purchases left out (uses test-period data: an optimistic reference no
  deployed system has on day one), and popularity among the new products in the first test week
  ("trending"), evaluated on the purchases after that week (every model is scored there too).
  Only customers with a training history are evaluated.

Usage: python benchmarks/featgan_retail.py [--store out/retail.duckdb] [--parts main,slates,speed,cold]
       [--json docs/results/featgan-online-retail.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from retailgan.data.dataset import InteractionDataset, load_dataset
from retailgan.data.splits import Split, split
from retailgan.evaluation.metrics import coverage, intra_list_diversity, rank_metrics
from retailgan.evaluation.protocols import evaluate
from retailgan.experiments import item_features_for_diversity
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.feature_gan import FeatureGAN
from retailgan.models.registry import get_model_class

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


def summary(result: Any) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in result.summary().items()}


VARIANTS: dict[str, dict[str, Any]] = {
    "featgan": {},
    "featgan, no adversarial term": {"adversarial": False},
    "featgan, mixture of 5 (train_samples=5)": {"train_samples": 5},
}


def part_main(s: Split, out: dict[str, Any], params: dict[str, Any], variants: list[str]) -> dict[str, FeatureGAN]:
    """Every model evaluated twice: on all customers with test purchases (what ``compare``
    reports; customers without a training history get each model's empty-history ranking), and
    on those with a training history only (the fair comparison: featgan ranks empty histories by
    popularity, the collaborative baselines by arbitrary ties)."""
    train, test = s.train.matrix(), s.test.matrix()
    with_history = np.flatnonzero(np.diff(train.indptr) > 0)
    feats = item_features_for_diversity(s.train)
    rows = []
    tuned = {r["model"]: r["params"] for r in json.loads(BASELINES.read_text())["results"]}

    def record(label: str, model: Any, extra: dict[str, Any]) -> None:
        res = evaluate(model, train, test, ks=KS, item_features=feats)
        res_h = evaluate(model, train, test, ks=KS, item_features=feats, users=with_history)
        rows.append({"model": label, "metrics": summary(res), "metrics_with_history": summary(res_h), **extra})
        print(label, rows[-1]["metrics"]["ndcg@10"], rows[-1]["metrics_with_history"]["ndcg@10"], flush=True)
        out["main"] = {"users_evaluated": int(res.n_users), "users_with_history": int(res_h.n_users), "rows": rows}

    for name in ("pop", "itemknn", "ease", "ials", "bpr"):
        model = get_model_class(name)(**tuned.get(name, {})).fit(s.train, TrainingOptions(seed=0))
        record(name, model, {"params": tuned.get(name, {}), "fit_s": model.fit_seconds})
    models = {}
    for label in variants:
        m, info = fit_featgan(s, {**params, **VARIANTS[label]})
        record(label, m, {"params": {**params, **VARIANTS[label]}, **info})
        models[label] = m
    return models


def part_slates(s: Split, model: FeatureGAN, out: dict[str, Any], label: str) -> None:
    train = s.train.matrix()
    rel = sp.csr_matrix(s.test.matrix() - s.test.matrix().multiply(train.astype(bool)))
    rel.eliminate_zeros()
    users = np.flatnonzero((np.diff(rel.indptr) > 0) & (np.diff(train.indptr) > 0))
    ids = list(s.train.users.decode(users))
    buyers = item_features_for_diversity(s.train)
    text = model.X[:, model.space.block_slices()["text"]]
    rows = []
    for samples, diversity in ((1, 0.0), (5, 0.0), (10, 0.0), (1, 0.1), (5, 0.1), (5, 0.2), (1, 0.2)):
        t = time.perf_counter()
        recs = model.recommend(ids, k=10, samples=samples, diversity=diversity)
        top = recs.item_idx
        m = rank_metrics(top, rel[users], (10,))
        rows.append(
            {
                "samples": samples,
                "diversity": diversity,
                "ndcg@10": round(float(m["ndcg@10"].mean()), 4),
                "recall@10": round(float(m["recall@10"].mean()), 4),
                "ild@10 (buyers)": round(float(np.nanmean(intra_list_diversity(top, buyers, 10))), 4),
                "ild@10 (text)": round(float(np.nanmean(intra_list_diversity(top, text, 10))), 4),
                "coverage@10": round(coverage(top, model.n_items, 10), 4),
                "seconds": round(time.perf_counter() - t, 1),
            }
        )
        print(label, rows[-1], flush=True)
    out.setdefault("slates", {})[label] = {"users": len(users), "rows": rows}


def part_speed(s: Split, model: FeatureGAN, out: dict[str, Any], n: int = 300) -> None:
    rng = np.random.default_rng(0)
    has = np.flatnonzero(np.diff(s.train.matrix().indptr) > 0)
    ids = list(s.train.users.decode(rng.choice(has, n, replace=False)))
    res = {}
    for samples in (1, 5):
        model.recommend(ids[:5], k=10, samples=samples)  # warm-up (index, item vectors)
        times = []
        for u in ids:
            t = time.perf_counter()
            model.recommend([u], k=10, samples=samples)
            times.append((time.perf_counter() - t) * 1000)
        res[f"S={samples}"] = {
            "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(float(np.quantile(times, 0.9)), 3),
        }
    print(res, flush=True)
    out["speed"] = {"customers": n, "index": model.config.index, **res}


def cold_split(ds: InteractionDataset, s: Split, fraction: float = 0.2, seed: int = 0) -> tuple[Split, np.ndarray]:
    rng = np.random.default_rng(seed)
    new = np.zeros(ds.n_items, bool)
    new[rng.choice(ds.n_items, int(fraction * ds.n_items), replace=False)] = True

    def warm(part: InteractionDataset) -> InteractionDataset:
        return part.subset(~new[part.item_idx])

    test = s.test.subset(new[s.test.item_idx])
    return Split("cold", seed, warm(s.train), test, warm(s.train_inner), warm(s.validation)), new


def part_cold(ds: InteractionDataset, s: Split, out: dict[str, Any], params: dict[str, Any]) -> None:
    cs, new = cold_split(ds, s)
    train, test = cs.train.matrix(), cs.test.matrix()
    with_history = np.flatnonzero(np.diff(train.indptr) > 0)
    cand = np.flatnonzero(new)
    mask = np.full(ds.n_items, -np.inf, np.float32)
    mask[cand] = 0.0
    # Second test set: purchases after the first week of the test period, so that the new
    # products' first-week sales can serve as a deployable "trending" signal.
    week_end = int(cs.test.timestamp.min()) + 7 * 86400
    early = cs.test.subset(cs.test.timestamp < week_end).matrix()
    late = cs.test.subset(cs.test.timestamp >= week_end).matrix()

    def restricted(score):
        return lambda u: np.asarray(score(u), np.float32) + mask

    model, info = fit_featgan(cs, params)
    # content-kNN on the same text vectors (fitted on the warm products only, as featgan's).
    text = model.X[:, model.space.block_slices()["text"]]
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)

    def content_knn(u: np.ndarray) -> np.ndarray:
        scores = np.full((len(u), ds.n_items), -np.inf, np.float32)
        for r, uu in enumerate(u):
            hist = train[uu].indices
            scores[r, cand] = (text[hist] @ text[cand].T).max(axis=0) if len(hist) else 0.0
        return scores

    counts = np.asarray(test.sum(axis=0)).ravel().astype(np.float32)

    def test_popularity(u: np.ndarray) -> np.ndarray:
        return (counts[None, :] - test[u].toarray()) + mask  # the customer's own purchases left out

    early_counts = np.asarray(early.sum(axis=0)).ravel().astype(np.float32)

    def first_week_popularity(u: np.ndarray) -> np.ndarray:
        return np.broadcast_to(early_counts + mask, (len(u), ds.n_items))

    scorers = {
        "featgan": restricted(model.score_users),
        "content-kNN (text)": content_knn,
        "popularity among new products, test period (own purchases left out; oracle)": test_popularity,
        "popularity among new products, first test week (trending)": first_week_popularity,
    }
    rows = []
    for label, fn in scorers.items():
        row: dict[str, Any] = {"model": label}
        if "first test week" not in label:
            res = evaluate(None, train, test, ks=KS, scores_fn=fn, users=with_history, prefetch=False)
            row["metrics"] = summary(res)
        # After week one, what the customer bought in week one is known and excluded.
        res_late = evaluate(None, train + early, late, ks=KS, scores_fn=fn, users=with_history, prefetch=False)
        row["metrics_after_week1"] = summary(res_late)
        rows.append(row)
        print(label, row.get("metrics", {}).get("ndcg@10"), row["metrics_after_week1"]["ndcg@10"], flush=True)
    rows[0].update(info)
    out["cold"] = {
        "new_products": int(new.sum()),
        "test_pairs": int(test.nnz),
        "test_pairs_after_week1": int(late.nnz),
        "users_evaluated": int(res.n_users),
        "users_evaluated_after_week1": int(res_late.n_users),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, default=REPO / "out" / "retail.duckdb")
    ap.add_argument("--parts", default="main,slates,speed,cold", help="slates and speed need main")
    ap.add_argument("--params", default="{}", help="featgan parameters (JSON)")
    ap.add_argument("--variants", default=";".join(VARIANTS), help="featgan variants, ';'-separated")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = {"epochs": 30, "patience": 3, **json.loads(args.params)}
    ds = load_dataset(ensure_store(args.store))
    s = split(ds, "temporal", seed=0)
    parts = args.parts.split(",")
    out: dict[str, Any] = {
        "dataset": ds.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch 1 thread",
        "featgan_params": params,
    }
    t = time.perf_counter()
    if "main" in parts:
        models = part_main(s, out, params, args.variants.split(";"))
        for label, model in models.items():
            if "slates" in parts:
                part_slates(s, model, out, label)
        if "speed" in parts:
            part_speed(s, next(iter(models.values())), out)
    if "cold" in parts:
        part_cold(ds, s, out, params)
    out["total_s"] = round(time.perf_counter() - t, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
