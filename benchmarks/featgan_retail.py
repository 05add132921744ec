"""The feature GAN on UCI Online Retail: accuracy beside the baselines, ablation, cold start, slates, speed.

Parts (``--parts``, comma-separated):

* ``main``: temporal split, seed 0. Baselines are fitted on the training part with the
  parameters chosen by the 30-trial searches of docs/results/online-retail-temporal.json (read
  from that file). Each featgan variant (``--variants``: default, without the adversarial term) is
  fitted on the inner training part with early stopping on validation
  NDCG@10, then refitted on the whole training part for the chosen number of epochs, and
  evaluated once on test (full ranking, training items excluded), as ``retailgan compare`` does,
  on all customers with test purchases and on those with a training history.
  With ``--trend-days 7,14,28``, baselines that see recent sales too: popularity over the last
  days, and EASE plus ``w * log(1 + distinct buyers of the last days)`` (:class:`TrendBlend`),
  window and weight chosen on validation; paired tests of each featgan variant against EASE and
  the blend (customers with a history).
* ``trend-sweep``: featgan's ``trend_days`` (windows of ``--trend-days``, default 3, 7, 14, 28),
  with and without the adversarial term, chosen on validation NDCG@10 (inner training part).
* ``slates``: every featgan variant, ``recommend(samples=S, diversity=lam)`` for every
  evaluated customer: NDCG@10, intra-list diversity@10
  (cosine distance over the products' training buyers, as ``compare`` reports it, and over the
  text block of the feature space) and coverage.
* ``slates-validated``: S = 5 slates merged with MMR (or DPP), settings chosen on validation per
  ILD space (buyers, text, the retrieval space) within a
  5 % NDCG@10 budget against the plain S = 1 list, then evaluated once on test
  (:func:`part_slates_validated`); ``--params`` gives the featgan parameters.
* ``launch``: cold start on the products first sold after the cut-off (featgan_cold.py).
* ``speed``: median wall time of ``recommend`` for one customer (exact search), S = 1 and S = 5
  (without re-ranking, and with MMR and DPP at diversity 0.3), for every variant.
* ``cold``: a cold-start split, 20 % of the products hidden from training (featgan_cold.py).

Usage: python benchmarks/featgan_retail.py [--store out/retail.duckdb] [--parts main,slates,speed,cold]
       [--variants "featgan;label: {\"ema\": 0.998}"] [--prior-days 4] [--refit-week1]
       [--trend-days 7,14,28] [--cold-trend 14] [--cold-variants "label: {json};..."] [--cold-seeds 3]
       [--cold-val-prior]
       [--json docs/results/featgan-online-retail.json]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from featgan_cold import part_cold, part_launch
from featgan_common import BASELINES, KS, REPO, VARIANTS, ensure_store, fit_featgan, paired, summary, variant_params

from retailgan.data.dataset import InteractionDataset, load_dataset
from retailgan.data.splits import Split, split
from retailgan.evaluation.metrics import coverage, intra_list_diversity, rank_metrics
from retailgan.evaluation.protocols import evaluate
from retailgan.experiments import item_features_for_diversity
from retailgan.models.base import TrainingOptions
from retailgan.models.diversify import gram, mmr
from retailgan.models.gan.featgan import FeatureGAN
from retailgan.models.registry import get_model_class

TREND_WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0)


class TrendBlend:
    """A fitted recommender's scores plus ``weight * log(1 + r_i)``, ``r_i`` the distinct buyers
    of product i in the last ``days`` x 24 hours of the training part (what the baselines get to
    match featgan's ``trend_days``); empty histories keep the model's own fallback ranking. The
    deployable model ``recent`` (:mod:`retailgan.models.recent`) counts calendar days instead,
    as featgan and the store do; the tables were measured with this rolling window."""

    def __init__(self, model: Any, part: InteractionDataset, days: int, weight: float) -> None:
        since = int(part.timestamp.max()) - days * 86400
        recent = np.bincount(part.item_idx[part.timestamp > since], minlength=part.n_items)
        self.model, self.weight = model, weight
        self.bonus = (weight * np.log1p(recent)).astype(np.float32)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.model.score_users(user_idx) + self.bonus

    def fallback_scores(self) -> np.ndarray:
        return self.model.fallback_scores()


def trend_choices(
    s: Split, name: str, params: dict[str, Any], days: list[int], weights: tuple[float, ...] = TREND_WEIGHTS
) -> dict[str, Any]:
    """Window and weight of :class:`TrendBlend` for baseline ``name`` and the window of popularity
    over the last days, chosen on validation (fit on the inner training part, NDCG@10 of the
    customers with a history; ties: the shorter window, the smaller weight)."""
    model = get_model_class(name)(**params).fit(s.train_inner, TrainingOptions(seed=0))
    train, val = s.train_inner.matrix(), s.validation.matrix()
    users = np.flatnonzero(np.diff(train.indptr) > 0)

    def ndcg(m: Any) -> float:
        return round(float(evaluate(m, train, val, ks=KS, users=users, prefetch=False).summary()["ndcg@10"]), 4)

    grid, pop_grid = [], []
    for d in days:
        pop = get_model_class("pop")(recent_days=d).fit(s.train_inner, TrainingOptions(seed=0))
        pop_grid.append({"days": d, "ndcg@10": ndcg(pop)})
        for w in weights:
            grid.append({"days": d, "weight": w, "ndcg@10": ndcg(TrendBlend(model, s.train_inner, d, w))})
            print("validation", name, "+ recent sales", grid[-1], flush=True)
    best = max(grid, key=lambda r: (r["ndcg@10"], -r["days"], -r["weight"]))
    best_pop = max(pop_grid, key=lambda r: (r["ndcg@10"], -r["days"]))
    return {"blend": best, "blend_grid": grid, "pop_days": best_pop["days"], "pop_grid": pop_grid}


def part_main(
    s: Split,
    out: dict[str, Any],
    params: dict[str, Any],
    variants: list[str],
    trend_days: list[int] | None = None,
    blend: tuple[str, ...] = ("ease",),
    tuned_baselines: bool = True,
    weights: tuple[float, ...] = TREND_WEIGHTS,
) -> dict[str, FeatureGAN]:
    """Every model evaluated twice: on all customers with test purchases (what ``compare``
    reports; customers without a training history get each model's empty-history ranking), and
    on those with a training history only (the fair comparison: featgan ranks empty histories by
    popularity, the collaborative baselines by arbitrary ties). With ``trend_days`` (windows in
    days), the baselines that see recent sales too: popularity over the last days, and each model
    of ``blend`` plus those sales (:class:`TrendBlend`), windows and weight chosen on validation
    (:func:`trend_choices`). Paired tests of every featgan variant against those models and their
    blends (customers with a history). ``tuned_baselines=False``: every baseline with its default
    parameters (for another dataset than Online Retail)."""
    train, test = s.train.matrix(), s.test.matrix()
    with_history = np.flatnonzero(np.diff(train.indptr) > 0)
    feats = item_features_for_diversity(s.train)
    rows = []
    tuned = {r["model"]: r["params"] for r in json.loads(BASELINES.read_text())["results"]} if tuned_baselines else {}
    per_user: dict[str, np.ndarray] = {}

    def record(label: str, model: Any, extra: dict[str, Any]) -> None:
        res = evaluate(model, train, test, ks=KS, item_features=feats)
        res_h = evaluate(model, train, test, ks=KS, item_features=feats, users=with_history)
        per_user[label] = res_h.per_user["ndcg@10"]
        rows.append({"model": label, "metrics": summary(res), "metrics_with_history": summary(res_h), **extra})
        print(label, rows[-1]["metrics"]["ndcg@10"], rows[-1]["metrics_with_history"]["ndcg@10"], flush=True)
        out["main"] = {"users_evaluated": int(res.n_users), "users_with_history": int(res_h.n_users), "rows": rows}

    for name in ("pop", "itemknn", "ease", "ials", "bpr"):
        model = get_model_class(name)(**tuned.get(name, {})).fit(s.train, TrainingOptions(seed=0))
        record(name, model, {"params": tuned.get(name, {}), "fit_s": model.fit_seconds})
    against = list(blend)
    for i, name in enumerate(blend if trend_days else ()):
        assert trend_days
        base_params = tuned.get(name, {})
        chosen = trend_choices(s, name, base_params, trend_days, weights)
        if i == 0:
            d = chosen["pop_days"]
            pop = get_model_class("pop")(recent_days=d).fit(s.train, TrainingOptions(seed=0))
            record(f"pop, last {d} days", pop, {"params": {"recent_days": d}, "pop_grid": chosen["pop_grid"]})
        base = get_model_class(name)(**base_params).fit(s.train, TrainingOptions(seed=0))
        d, w = chosen["blend"]["days"], chosen["blend"]["weight"]
        label = f"{name} + sales of the last {d} days (weight {w:g})"
        record(label, TrendBlend(base, s.train, d, w), {"params": base_params, "blend_grid": chosen["blend_grid"]})
        against.append(label)
    models = {}
    for label in variants:
        m, info = fit_featgan(s, {**params, **variant_params(label)})
        record(label, m, {"params": {**params, **variant_params(label)}, **info})
        models[label] = m
    tests = {}
    for label in variants:
        for b in against:
            tests[f"{label} - {b}"] = paired(per_user[label], per_user[b])
            print(label, "-", b, tests[f"{label} - {b}"], flush=True)
    out["main"]["paired_tests_with_history"] = tests
    return models


def part_trend_sweep(s: Split, out: dict[str, Any], params: dict[str, Any], days: list[int]) -> None:
    """featgan's ``trend_days`` (with and without the adversarial term) chosen on validation:
    each setting fitted on the inner training part with early stopping on validation NDCG@10
    (customers with a history); no test purchase is used."""
    rows = []
    for d in days:
        for adversarial in (True, False):
            p = {**params, "trend_days": d, "adversarial": adversarial}
            m = FeatureGAN(**p).fit(
                s.train_inner, TrainingOptions(seed=0, validation=s.validation, validation_metric="ndcg@10")
            )
            val = max(h.get("val_ndcg@10", float("-inf")) for h in m.history)
            rows.append({"trend_days": d, "adversarial": adversarial, "validation_ndcg@10": round(val, 4),
                         "best_epoch": int(m.best_epoch), "fit_s": round(m.fit_seconds, 1)})
            print("trend sweep", rows[-1], flush=True)
    out["trend_sweep"] = {"rows": rows, "best": max(rows, key=lambda r: r["validation_ndcg@10"])}


def fit_variants(s: Split, out: dict[str, Any], params: dict[str, Any], variants: list[str]) -> dict[str, FeatureGAN]:
    """The featgan variants alone (no baselines, no test evaluation): for ``slates`` without ``main``."""
    models = {}
    for label in variants:
        models[label], info = fit_featgan(s, {**params, **variant_params(label)})
        out.setdefault("fits", {})[label] = {"params": {**params, **variant_params(label)}, **info}
        print(label, info, flush=True)
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
    settings = [(1, 0.0), (5, 0.0), (10, 0.0), (1, 0.1), (5, 0.1), (5, 0.2), (1, 0.2)]
    for samples, diversity in settings:
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
    # How far the noise moves the generated vectors: cosine between the noise-mean vector and 4
    # draws, and each vector's best cosine to a product (S = 5, as recommend draws them).
    indptr, items = model._user_rows(users)
    G = model.generate_vectors(indptr, items, samples=5)
    best = (G @ model.item_vectors.T).max(axis=2)
    spread = {
        "cos(mean vector, draw)": round(float(np.einsum("nd,nsd->ns", G[:, 0], G[:, 1:]).mean()), 4),
        "best product cosine, mean vector": round(float(best[:, 0].mean()), 4),
        "best product cosine, draws": round(float(best[:, 1:].mean()), 4),
    }
    print(label, spread, flush=True)
    out.setdefault("slates", {})[label] = {"users": len(users), "noise": spread, "rows": rows}


SLATE_DIVERSITY = (0.0, 0.1, 0.2, 0.3, 0.5)
ILD_SPACES = ("buyers", "text", "retrieval")


def slate_rows(model: FeatureGAN, part: InteractionDataset, train: sp.csr_matrix, test: sp.csr_matrix) -> list[dict]:
    """NDCG@10, ILD@10 in three spaces and coverage of S = 1 (MMR weights of SLATE_DIVERSITY)
    and S = 5 (every weight) for the customers with a history
    and a test purchase of products they had not bought."""
    rel = sp.csr_matrix(test - test.multiply(train.astype(bool)))
    rel.eliminate_zeros()
    users = np.flatnonzero((np.diff(rel.indptr) > 0) & (np.diff(train.indptr) > 0))
    ids = list(part.users.decode(users))
    spaces = {
        "buyers": item_features_for_diversity(part),
        "text": model.X[:, model.space.block_slices()["text"]],
        "retrieval": model.item_vectors,
    }
    rows = []

    def measure(top: np.ndarray, **setting: Any) -> None:
        row = {**setting, "ndcg@10": round(float(rank_metrics(top, rel[users], (10,))["ndcg@10"].mean()), 4)}
        for name, f in spaces.items():
            row[f"ild@10 ({name})"] = round(float(np.nanmean(intra_list_diversity(top, f, 10))), 4)
        row["coverage@10"] = round(coverage(top, model.n_items, 10), 4)
        rows.append(row)
        print("slates", row, flush=True)

    for samples in (1, 5):
        for diversity in SLATE_DIVERSITY:
            top = model.recommend(ids, k=10, samples=samples, diversity=diversity).item_idx
            measure(top, samples=samples, diversity=diversity)
    # Reference, not a candidate: the plain list re-ranked by MMR on the products' exact buyer
    # vectors (what "ILD buyers" measures) from its top 30: how much buyer ILD re-ranking can buy.
    buyer_vecs = sp.csr_matrix(spaces["buyers"], dtype=np.float64)
    norms = np.sqrt(np.asarray(buyer_vecs.multiply(buyer_vecs).sum(axis=1)).ravel())
    buyer_vecs = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ buyer_vecs
    scores = model.score_users(users)
    scores[train[users].toarray() > 0] = -np.inf
    pools = np.argsort(-scores, axis=1, kind="stable")[:, :30]
    for diversity in (0.1, 0.2, 0.3):
        top = np.zeros((len(users), 10), np.int64)
        for r, pool in enumerate(pools):
            top[r] = pool[mmr(scores[r, pool], gram(buyer_vecs[pool].toarray()), 10, diversity)]
        measure(top, samples=1, diversity=diversity, mmr_space="buyers (reference)")
    return rows


def part_slates_validated(s: Split, out: dict[str, Any], params: dict[str, Any], budget: float = 0.05) -> None:
    """S = 5 slates (merged with MMR or DPP) whose settings are chosen on validation: for each
    ILD space, the S = 5 setting with the largest ILD@10 whose NDCG@10 is within ``budget`` of
    the plain S = 1 list, on a model fitted on the inner training part (early stopping); then the
    model refitted on the whole training part, every setting evaluated once on test."""
    probe = FeatureGAN(**params).fit(
        s.train_inner, TrainingOptions(seed=0, validation=s.validation, validation_metric="ndcg@10")
    )
    val_rows = slate_rows(probe, s.train_inner, s.train_inner.matrix(), s.validation.matrix())
    chosen = {}
    for space in ILD_SPACES:
        ref = val_rows[0]
        ok = [
            r
            for r in val_rows
            if r["samples"] == 5 and "mmr_space" not in r and r["ndcg@10"] >= (1 - budget) * ref["ndcg@10"]
        ]
        best = max(ok, key=lambda r: (r[f"ild@10 ({space})"], r["ndcg@10"]))
        chosen[space] = {k: best[k] for k in ("samples", "diversity")}
    final = FeatureGAN(**{**params, "epochs": max(int(probe.best_epoch), 1)}).fit(s.train, TrainingOptions(seed=0))
    test_rows = slate_rows(final, s.train, s.train.matrix(), s.test.matrix())
    out["slates_validated"] = {
        "params": params,
        "best_epoch": int(probe.best_epoch),
        "ndcg_budget": budget,
        "chosen_on_validation": chosen,
        "validation": val_rows,
        "test": test_rows,
    }


def part_speed(s: Split, model: FeatureGAN, out: dict[str, Any], label: str, n: int = 300) -> None:
    rng = np.random.default_rng(0)
    has = np.flatnonzero(np.diff(s.train.matrix().indptr) > 0)
    ids = list(s.train.users.decode(rng.choice(has, n, replace=False)))
    res = {}
    config = model.config
    # (samples, diversity, diversifier): the plain list, a slate without and with re-ranking.
    settings = {
        "S=1": (1, 0.0, "mmr"),
        "S=5": (5, 0.0, "mmr"),
        "S=5, MMR 0.3": (5, 0.3, "mmr"),
        "S=5, DPP 0.3": (5, 0.3, "dpp"),
    }
    for key, (samples, diversity, diversify) in settings.items():
        model.config = dataclasses.replace(config, diversify=diversify)
        model.recommend(ids[:5], k=10, samples=samples, diversity=diversity)  # warm-up (index, item vectors)
        times = []
        for u in ids:
            t = time.perf_counter()
            model.recommend([u], k=10, samples=samples, diversity=diversity)
            times.append((time.perf_counter() - t) * 1000)
        res[key] = {
            "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(float(np.quantile(times, 0.9)), 3),
        }
    model.config = config
    print(label, res, flush=True)
    out.setdefault("speed", {})[label] = {"customers": n, "index": model.config.index, **res}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, default=REPO / "out" / "retail.duckdb")
    ap.add_argument(
        "--parts", default="main,slates,speed,cold", help="slates and speed without main fit the variants only"
    )
    ap.add_argument("--params", default="{}", help="featgan parameters (JSON)")
    ap.add_argument(
        "--variants",
        default=";".join(VARIANTS),
        help="featgan variants, ';'-separated: names of VARIANTS or 'label: {json parameters}'",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--prior-days", type=float, default=4.0, help="cold: days of the first week that give the prior")
    ap.add_argument(
        "--refit-week1",
        action="store_true",
        help="cold: also refit featgan and EASE on training + the first-week purchases of the new products",
    )
    ap.add_argument(
        "--trend-days",
        default="",
        metavar="DAYS",
        help="comma-separated windows (days): main adds popularity of the last days and EASE + those "
        "sales (window and weight chosen on validation); trend-sweep tries featgan's trend_days "
        "(default 3,7,14,28)",
    )
    ap.add_argument("--trend-blend", default="ease", help="main: baselines blended with recent sales (comma-separated)")
    ap.add_argument(
        "--trend-weights",
        default=",".join(f"{w:g}" for w in TREND_WEIGHTS),
        help="main: weights tried for each blend (score units of the baseline)",
    )
    ap.add_argument(
        "--default-baselines",
        action="store_true",
        help="main: baselines with default parameters instead of the Online Retail search's (other datasets)",
    )
    ap.add_argument(
        "--cold-trend",
        type=int,
        default=0,
        metavar="DAYS",
        help="cold: also a featgan with trend_days = DAYS, the first-week sales as its recent sales after week 1",
    )
    ap.add_argument(
        "--cold-variants",
        default="",
        help="cold: featgan variants ('label: {json}', ';'-separated) fitted on the cold split; the one with "
        "the best cold-validation NDCG@10 (mean over --cold-seeds) is the featgan of the cold tables",
    )
    ap.add_argument("--cold-seeds", type=int, default=1, help="cold: training seeds per variant of --cold-variants")
    ap.add_argument(
        "--cold-val-prior",
        action="store_true",
        help="cold: also choose the first-week-sales hybrids on the validation period (featgan of the inner part, "
        "the new products' first validation week as the prior, their later validation purchases as targets)",
    )
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
    if "main" in parts or "slates" in parts or "speed" in parts:
        variants = args.variants.split(";")
        if "main" in parts:
            trend = [int(d) for d in args.trend_days.split(",") if d]
            models = part_main(
                s,
                out,
                params,
                variants,
                trend,
                tuple(args.trend_blend.split(",")),
                not args.default_baselines,
                tuple(float(w) for w in args.trend_weights.split(",")),
            )
            for label, model in models.items():
                if "slates" in parts:
                    part_slates(s, model, out, label)
        else:  # one variant at a time, the JSON rewritten after each (a long run keeps what it finished)
            models = {}
            for label in variants:
                models.update(fit_variants(s, out, params, [label]))
                if "slates" in parts:
                    part_slates(s, models[label], out, label)
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(out, indent=2) + "\n")
        if "speed" in parts:
            for label, model in models.items():
                part_speed(s, model, out, label)
    if "slates-validated" in parts:
        part_slates_validated(s, out, params)
    if "launch" in parts:
        part_launch(s, out, params)
    if "trend-sweep" in parts:
        part_trend_sweep(s, out, params, [int(d) for d in (args.trend_days or "3,7,14,28").split(",")])
    if "cold" in parts:
        cold_variants = [v for v in args.cold_variants.split(";") if v.strip()]
        part_cold(
            ds,
            s,
            out,
            params,
            args.prior_days,
            args.refit_week1,
            args.cold_trend,
            cold_variants,
            args.cold_seeds,
            args.cold_val_prior,
        )
    out["total_s"] = round(time.perf_counter() - t, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
