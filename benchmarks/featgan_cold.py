"""The feature GAN on new products: the ``cold`` and ``launch`` parts of featgan_retail.py.

Run them through featgan_retail.py (``--parts cold``, ``--parts launch`` and the ``--cold-*``,
``--prior-days``, ``--refit-week1`` options); results: docs/benchmarks-featgan.md, section 2.

* ``launch``: cold start on the products first sold after the cut-off, ranked day by day among
  those on sale (:func:`part_launch`).
* ``cold``: a cold-start split. 20 % of the products (seeded) are declared new: all their pairs
  are removed from the training part. Test: the test-period purchases of new products by
  customers with a training history; candidates: the new products only. featgan against
  content-kNN (each new product scored by its largest text cosine to the customer's history, the
  same TF-IDF/SVD text vectors), popularity among the new products in the test period with the
  evaluated customer's own purchases left out (uses test-period data: an optimistic reference no
  deployed system has on day one), popularity among the new products predicted from their
  catalogue record (the day-one popularity a retailer can deploy: :func:`catalogue_popularity`,
  its setting chosen on the cold validation set below), and popularity among the new products in
  the first test week ("trending"), evaluated on the purchases after that week (every model is
  scored there too).
  Only customers with a training history are evaluated. Hybrids: featgan's cosine blended with
  the same first-week sales (:func:`retailgan.models.gan.featgan.blend_item_prior`, weight
  ``cold_prior``), either plain counts or counts weighted by the buyers' similarity to the
  customer (:func:`~retailgan.models.gan.featgan.buyer_weighted_counts`, ``prior_kernel``).
  ``(cold_prior, prior_kernel)`` are chosen on a grid without the evaluated purchases, on two
  validation designs inside the first week: "time" (sales of the first ``--prior-days`` days,
  scaled to a week; targets: the new-product purchases of the rest of the week) and "own" (the
  whole week's sales with the customer's own purchases left out; targets: the customer's
  new-product purchases of that week); with ``--cold-val-prior`` also "validation period" (the
  featgan of the inner training part, the new products' sales in the first week of the
  validation period as the prior, their later validation purchases as targets: the same
  question one period earlier, on many more customers). Each design's best plain and best
  buyer-weighted setting is then applied with the whole first week's sales and evaluated after
  week one. Paired tests
  (per-customer NDCG@10: bootstrap CI, t-test, Wilcoxon) compare each hybrid with trending
  popularity and with featgan alone. With ``--refit-week1``, featgan and EASE are also refitted on
  the training part plus the new products' first-week purchases and evaluated after week one,
  featgan alone and blended with the first-week sales (weight chosen on the "time" design, with
  a refit on the first ``--prior-days`` days); see :func:`refit_with_week1`. With
  ``--cold-trend DAYS``, a featgan with ``trend_days = DAYS`` too: on day one the new products
  have no recent sales, after week one their first-week sales are its recent sales. With
  ``--cold-variants``, several featgan settings are fitted on the cold split, each with
  ``--cold-seeds`` training seeds and each seed refitted for two epoch counts (the warm
  validation's early stop, and the best epoch on a cold validation set: the new products'
  purchases in the validation period, ranked by the model of the inner training part, which
  holds no new product either); the featgan of the tables is the candidate with the best mean
  cold-validation NDCG@10, the others get rows of their own, and seed means are compared with
  content-kNN. content-kNN is measured on featgan's text block and on raw TF-IDF title vectors
  (no SVD), the sharper one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from featgan_common import BASELINES, KS, fit_featgan, paired, summary, tfidf_knn_scores, variant_params

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import Split
from retailgan.evaluation.protocols import evaluate
from retailgan.features.text import TextEncoder
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.featgan import FeatureGAN, blend_item_prior, buyer_weighted_counts
from retailgan.models.registry import get_model_class

PRIOR_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
PRIOR_KERNELS = (0.0, 0.05, 0.1, 0.2, 0.5)
KNN_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
POP_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
POP_NEIGHBOURS = (5, 10, 20, 50)


def catalogue_popularity(
    titles: list[object], prices: np.ndarray, known: np.ndarray, buyers: np.ndarray, cand: np.ndarray
) -> dict[str, np.ndarray]:
    """Day-one popularity of the ``cand`` products predicted from their catalogue record alone.

    The target is ``log(1 + buyers)`` of the ``known`` products (``buyers``: one count per
    product of the vocabulary). Two predictors, every setting of each (keys name them):

    * ``ridge, alpha = a``: ridge regression on the raw TF-IDF title vectors (featgan's text
      encoder fitted on the known titles) plus one-hot price deciles and an intercept;
    * ``text neighbours, k = k``: the similarity-weighted mean over the ``k`` known products
      with the largest TF-IDF cosine.

    Returns ``(len(cand),)`` predicted log-buyer counts per setting.
    """
    from scipy.sparse.linalg import lsqr

    tfidf = TextEncoder(min_df=2).fit([titles[i] for i in known]).tfidf(titles).tocsr()
    logp = np.log(np.clip(np.nan_to_num(np.asarray(prices, np.float64), nan=1.0), 1e-3, None))
    band = np.digitize(logp, np.quantile(logp[known], np.linspace(0, 1, 11)[1:-1]))
    onehot = sp.csr_matrix((np.ones(len(band)), (np.arange(len(band)), band)), shape=(len(band), 10))
    X = sp.hstack([tfidf, onehot, np.ones((len(band), 1))]).tocsr()
    y = np.log1p(buyers[known].astype(np.float64))
    out: dict[str, np.ndarray] = {}
    for alpha in POP_ALPHAS:
        w = lsqr(X[known], y, damp=float(np.sqrt(alpha)), atol=1e-8, btol=1e-8)[0]
        out[f"ridge, alpha = {alpha:g}"] = np.asarray(X[cand] @ w, np.float32)
    sims = (tfidf[cand] @ tfidf[known].T).toarray()
    order = np.argsort(-sims, axis=1, kind="stable")
    for k in POP_NEIGHBOURS:
        top = order[:, :k]
        wts = np.maximum(np.take_along_axis(sims, top, axis=1), 1e-6)
        out[f"text neighbours, k = {k}"] = ((wts * y[top]).sum(axis=1) / wts.sum(axis=1)).astype(np.float32)
    return out


def _launch_days(fit_part: InteractionDataset, eval_part: InteractionDataset) -> dict[int, int]:
    """Products without a pair in ``fit_part`` that sell in ``eval_part``: product -> launch day
    (the day of its first sale)."""
    known = np.zeros(fit_part.n_items, bool)
    known[fit_part.item_idx] = True
    day = eval_part.timestamp.astype(np.int64) // 86400
    out: dict[int, int] = {}
    for i, d in zip(eval_part.item_idx[~known[eval_part.item_idx]], day[~known[eval_part.item_idx]], strict=True):
        out[int(i)] = min(out.get(int(i), int(d)), int(d))
    return out


def launch_rolling(
    model: FeatureGAN,
    fit_part: InteractionDataset,
    eval_part: InteractionDataset,
    weights: tuple[float, ...],
    buyer_weighted: tuple[tuple[float, float], ...] = (),
) -> dict[str, np.ndarray]:
    """Per (customer, day) NDCG@10 of ranking the products launched in ``eval_part`` that are on
    sale that day (first sold on or before it), for customers with a history in ``fit_part``.
    Targets: the customer's purchases of launched products that day (not bought before).
    Rankers: popularity so far (buyers on earlier days), featgan, content-kNN (on featgan's text
    block, and on raw TF-IDF title vectors), featgan blended with popularity so far
    (``blend_item_prior``) for each weight, and with the buyer-weighted popularity so far
    (:func:`buyer_weighted_counts`: earlier buyers weighted by featgan similarity to the customer)
    for each ``(weight, kernel)`` of ``buyer_weighted``."""
    launch = _launch_days(fit_part, eval_part)
    items = np.array(sorted(launch))
    start = np.array([launch[i] for i in items])
    col = {int(i): c for c, i in enumerate(items)}
    fit_rows = fit_part.matrix()
    day = eval_part.timestamp.astype(np.int64) // 86400
    is_new = np.isin(eval_part.item_idx, items)
    u_all, i_all, d_all = eval_part.user_idx[is_new], eval_part.item_idx[is_new], day[is_new]
    order = np.lexsort((i_all, d_all))
    u_all, i_all, d_all = u_all[order], i_all[order], d_all[order]
    users = np.unique(u_all[np.diff(fit_rows.indptr)[u_all] > 0])
    cos = model.score_users(users)[:, items]
    text = model.X[:, model.space.block_slices()["text"]]
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    knn = np.stack([(text[fit_rows[u].indices] @ text[items].T).max(axis=0) for u in users])
    known = np.flatnonzero(np.asarray((fit_rows > 0).sum(axis=0)).ravel() > 0)
    knn_tfidf = tfidf_knn_scores(list(fit_part.item_info.titles), known, fit_rows, users, items)
    row = {int(u): r for r, u in enumerate(users)}
    out: dict[str, list[float]] = {
        "popularity so far": [], "featgan": [], "content-kNN (text)": [], "content-kNN (TF-IDF)": []
    }
    out.update({f"featgan + popularity so far (cold_prior = {w:g})": [] for w in weights})
    bw_key = "featgan + buyer-weighted popularity so far (cold_prior = {:g}, prior_kernel = {:g})"
    out.update({bw_key.format(w, k): [] for w, k in buyer_weighted})
    # featgan's generated vectors of the customers with a history in the fit part (the buyers'
    # similarity to the customer), computed once.
    has_hist = np.diff(fit_rows.indptr) > 0
    G = np.zeros((fit_rows.shape[0], model.config.emb_dim), np.float32)
    if buyer_weighted:
        G[has_hist] = model.generate_vectors(*model._user_rows(np.flatnonzero(has_hist)))[:, 0]
    rng = np.random.default_rng(0)
    tie = rng.random(len(items)) * 1e-6  # popularity ties broken at random, the same for everyone
    for d in np.unique(d_all):
        before = d_all < d
        counts = np.bincount([col[int(i)] for i in i_all[before]], minlength=len(items)).astype(np.float64)
        on_sale = start <= d
        today = d_all == d
        buyers, inv = np.unique(u_all[before], return_inverse=True)
        sales = sp.csr_matrix(
            (np.ones(len(inv)), (inv, [col[int(i)] for i in i_all[before]])), shape=(len(buyers), len(items))
        )
        for u in np.unique(u_all[today]):
            if int(u) not in row:
                continue
            bought_before = {col[int(i)] for i in i_all[before & (u_all == u)]}
            targets = {col[int(i)] for i in i_all[today & (u_all == u)]} - bought_before
            if not targets:
                continue
            allowed = on_sale.copy()
            allowed[list(bought_before)] = False
            r = row[int(u)]
            rankers = {
                "popularity so far": counts + tie,
                "featgan": cos[r],
                "content-kNN (text)": knn[r],
                "content-kNN (TF-IDF)": knn_tfidf[r],
            }
            for w in weights:
                key = f"featgan + popularity so far (cold_prior = {w:g})"
                rankers[key] = blend_item_prior(cos[r], counts, w, model.config.temperature)
            for kernel in sorted({k for _, k in buyer_weighted}):
                bw = buyer_weighted_counts(G[[u]], G[buyers], has_hist[buyers], sales, kernel)[0]
                for w in [w for w, k in buyer_weighted if k == kernel]:
                    rankers[bw_key.format(w, kernel)] = blend_item_prior(cos[r], bw, w, model.config.temperature)
            for key, score in rankers.items():
                ranked = np.flatnonzero(allowed)[np.argsort(-score[allowed], kind="stable")][:10]
                gains = np.array([1.0 if c in targets else 0.0 for c in ranked])
                dcg = float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())
                ideal = float((1.0 / np.log2(np.arange(2, min(len(targets), 10) + 2))).sum())
                out[key].append(dcg / ideal)
    return {k: np.asarray(v) for k, v in out.items()}


def part_launch(s: Split, out: dict[str, Any], params: dict[str, Any]) -> None:
    """Cold start as a retailer sees it: the products first sold after the cut-off, ranked day by
    day among the launched products on sale (:func:`launch_rolling`). The blend weight is chosen
    on the same protocol one period earlier (model fitted on the inner training part, products
    launched in the validation part), for the plain and the buyer-weighted popularity so far,
    then the test is run once."""
    probe = FeatureGAN(**params).fit(
        s.train_inner, TrainingOptions(seed=0, validation=s.validation, validation_metric="ndcg@10")
    )
    grid = tuple((w, k) for k in PRIOR_KERNELS[1:] for w in PRIOR_WEIGHTS[1:])
    val = launch_rolling(probe, s.train_inner, s.validation, PRIOR_WEIGHTS[1:], grid)
    val_mean = {k: round(float(v.mean()), 4) for k, v in val.items()}
    plain = {w: val_mean[f"featgan + popularity so far (cold_prior = {w:g})"] for w in PRIOR_WEIGHTS[1:]}
    w = max(plain, key=lambda x: (plain[x], -x))  # ties: the smaller weight
    bw_key = "featgan + buyer-weighted popularity so far (cold_prior = {:g}, prior_kernel = {:g})"
    bw_w, bw_k = max(grid, key=lambda wk: (val_mean[bw_key.format(*wk)], -wk[1], -wk[0]))
    print("launch validation", val_mean, "chosen", w, (bw_w, bw_k), flush=True)
    final = FeatureGAN(**{**params, "epochs": max(int(probe.best_epoch), 1)}).fit(s.train, TrainingOptions(seed=0))
    test = launch_rolling(final, s.train, s.test, (w,), ((bw_w, bw_k),))
    test_mean = {k: round(float(v.mean()), 4) for k, v in test.items()}
    print("launch test", test_mean, flush=True)
    blend = f"featgan + popularity so far (cold_prior = {w:g})"
    bw_blend = bw_key.format(bw_w, bw_k)
    tests = {f"{a} - {b}": paired(test[a], test[b]) for a, b in (
        (blend, "popularity so far"), ("featgan", "popularity so far"), ("featgan", "content-kNN (text)"),
        ("featgan", "content-kNN (TF-IDF)"), (blend, "featgan"), (bw_blend, "popularity so far"), (bw_blend, blend),
    )}
    launch = _launch_days(s.train, s.test)
    out["launch"] = {
        "launched_products": len(launch),
        "groups": len(test["featgan"]),
        "validation_launched_products": len(_launch_days(s.train_inner, s.validation)),
        "validation_groups": len(val["featgan"]),
        "validation": val_mean,
        "chosen_weight": w,
        "chosen_buyer_weighted": {"cold_prior": bw_w, "prior_kernel": bw_k},
        "best_epoch": int(probe.best_epoch),
        "test": test_mean,
        "paired_tests": tests,
    }


def cold_split(ds: InteractionDataset, s: Split, fraction: float = 0.2, seed: int = 0) -> tuple[Split, np.ndarray]:
    rng = np.random.default_rng(seed)
    new = np.zeros(ds.n_items, bool)
    new[rng.choice(ds.n_items, int(fraction * ds.n_items), replace=False)] = True

    def warm(part: InteractionDataset) -> InteractionDataset:
        return part.subset(~new[part.item_idx])

    test = s.test.subset(new[s.test.item_idx])
    return Split("cold", seed, warm(s.train), test, warm(s.train_inner), warm(s.validation)), new


def best_prior(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best validation NDCG@10; ties go to the smaller weight and kernel."""
    return max(rows, key=lambda r: (r["ndcg@10"], -r["cold_prior"], -r["prior_kernel"]))


def union(a: InteractionDataset, b: InteractionDataset) -> InteractionDataset:
    """The pairs of two parts with the same vocabularies (the parts' pairs must not overlap)."""
    return InteractionDataset(
        users=a.users,
        items=a.items,
        user_idx=np.concatenate([a.user_idx, b.user_idx]),
        item_idx=np.concatenate([a.item_idx, b.item_idx]),
        timestamp=np.concatenate([a.timestamp, b.timestamp]),
        weight=np.concatenate([a.weight, b.weight]),
        count=np.concatenate([a.count, b.count]),
        item_info=a.item_info,
        name=a.name,
    )


def refit_with_week1(
    cs: Split,
    params: dict[str, Any],
    epochs: int,
    users: np.ndarray,
    mask: np.ndarray,
    prior_days: float,
    week_end: int,
    prior_part: sp.csr_matrix,
    val_part: sp.csr_matrix,
    early: sp.csr_matrix,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """featgan and EASE refitted on the training part plus new-product purchases of the first
    test week, so that the new products that sold gain collaborative features and appear as
    targets. featgan is refitted from scratch for the cold model's early-stopped number of epochs
    (no new early stopping); EASE with the l2 of the temporal search. The weight of the
    first-week sales prior on top of the refitted featgan is chosen on the "time" design: fit on
    the training part plus the first ``prior_days`` days, validate on the new-product purchases of
    the rest of the week (prior: the first days' sales scaled to a week). Returns the scorers
    (customers ``users`` only) and a record of the fits and the validation."""
    first = int(cs.test.timestamp.min())
    val_cut = first + int(prior_days * 86400)
    tuned = {r["model"]: r["params"] for r in json.loads(BASELINES.read_text())["results"]}
    ease_params = tuned.get("ease", {})
    row_of = np.full(cs.train.n_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    fgp = {**params, "epochs": epochs}

    def fit_both(extra: InteractionDataset) -> tuple[np.ndarray, float, np.ndarray, dict[str, float]]:
        data = union(cs.train, extra)
        m = FeatureGAN(**fgp).fit(data, TrainingOptions(seed=0))
        indptr, items = m._user_rows(users)
        cos = m.generate_vectors(indptr, items)[:, 0] @ m.item_vectors.T
        t = time.perf_counter()
        ease = get_model_class("ease")(**ease_params).fit(data, TrainingOptions(seed=0))
        ease_scores = np.asarray(data.matrix()[users] @ ease.W, np.float32)
        times = {"featgan_fit_s": round(m.fit_seconds, 1), "ease_fit_s": round(time.perf_counter() - t, 1)}
        return cos, m.config.temperature, ease_scores, times

    def scorer(mat: np.ndarray, counts: np.ndarray | None = None, weight: float = 0.0, temperature: float = 1.0):
        def fn(u: np.ndarray) -> np.ndarray:
            sc = mat[row_of[u]]
            if counts is not None and weight > 0:
                sc = blend_item_prior(sc, np.broadcast_to(counts, sc.shape), weight, temperature)
            return sc + mask

        return fn

    # Validation ("time" design): nothing after day prior_days is used for the fit or the weight.
    cos_v, temperature, ease_v, times_v = fit_both(cs.test.subset(cs.test.timestamp < val_cut))
    seen_v = cs.train.matrix() + prior_part
    prior_counts_v = np.asarray(prior_part.sum(axis=0)).ravel() * (7.0 / prior_days)

    def val_ndcg(fn) -> float:
        res_v = evaluate(None, seen_v, val_part, ks=KS, scores_fn=fn, users=users, prefetch=False)
        return round(float(res_v.summary()["ndcg@10"]), 4)

    grid = []
    for w in PRIOR_WEIGHTS:
        nd = val_ndcg(scorer(cos_v, prior_counts_v, w, temperature))
        grid.append({"cold_prior": w, "prior_kernel": 0.0, "ndcg@10": nd})
        print("validation refit", grid[-1], flush=True)
    chosen = best_prior(grid)
    ease_val = val_ndcg(scorer(ease_v))
    print("validation refit: EASE", ease_val, flush=True)
    del cos_v, ease_v
    # Final: refit on the training part plus the whole first week, evaluated after week one.
    cos_f, temperature, ease_f, times_f = fit_both(cs.test.subset(cs.test.timestamp < week_end))
    early_counts = np.asarray(early.sum(axis=0)).ravel()
    w = chosen["cold_prior"]
    rows = {
        "featgan refit on training + first-week purchases": scorer(cos_f),
        f"featgan refit on training + first-week purchases + first-week sales prior (cold_prior = {w:g}; "
        "chosen on time)": scorer(cos_f, early_counts, w, temperature),
        f"EASE refit on training + first-week purchases (l2 = {ease_params.get('l2', 'default')})": scorer(ease_f),
    }
    record = {
        "featgan_epochs": epochs,
        "ease_params": ease_params,
        "validation_design": f"fit on training + new-product purchases of days 1-{prior_days:g}, "
        f"targets: new-product purchases of days {prior_days:g}-7",
        "validation_pairs": int(val_part.nnz),
        "validation_grid": grid,
        "chosen": chosen,
        "ease_validation_ndcg@10": ease_val,
        "fits_validation": times_v,
        "fits_final": times_f,
    }
    return rows, record


def day_one_popularity(
    ds: InteractionDataset,
    new: np.ndarray,
    inner: sp.csr_matrix,
    train: sp.csr_matrix,
    cold_val: Callable[[Callable[[np.ndarray], np.ndarray]], Any],
    mask: np.ndarray,
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, Any]]:
    """Popularity among the ``new`` products on day one, when they have no sales: predicted from
    the catalogue (:func:`catalogue_popularity`). Each predictor's setting is chosen by
    ``cold_val`` (counts of the ``inner`` training part), then the predictor is refitted on the
    ``train`` part's counts. Returns the chosen rankers (label -> scores of customers; ``mask``
    keeps the new products) and the record of the choice."""
    titles, prices = list(ds.item_info.titles), ds.item_info.prices
    known, cand = np.flatnonzero(~new), np.flatnonzero(new)

    def buyers(m: sp.csr_matrix) -> np.ndarray:
        return np.asarray((m > 0).sum(axis=0)).ravel()

    def ranker(pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        full = np.zeros(ds.n_items, np.float32)
        full[cand] = pred
        return lambda u: np.broadcast_to(full + mask, (len(u), ds.n_items))

    pop_val = catalogue_popularity(titles, prices, known, buyers(inner), cand)
    pop_test = catalogue_popularity(titles, prices, known, buyers(train), cand)
    grid = {}
    for key, pred in pop_val.items():
        grid[key] = round(float(cold_val(ranker(pred)).summary()["ndcg@10"]), 4)
        print("cold validation: predicted popularity", key, grid[key], flush=True)
    rows: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    choice: dict[str, str] = {}
    for kind in ("ridge", "text neighbours"):
        keys = [k for k in grid if k.startswith(kind)]
        best = max(keys, key=lambda k: (grid[k], -keys.index(k)))  # ties: the first (smaller) setting
        choice[kind] = best
        label = f"popularity among new products, predicted from the catalogue ({best}; chosen on cold validation)"
        rows[label] = ranker(pop_test[best])
    record = {
        "design": "log(1 + buyers) of the known products from TF-IDF title vectors + price deciles; "
        "cold validation as for the featgan variants",
        "cold_validation_ndcg@10": grid,
        "chosen": choice,
    }
    return rows, record


def fit_cold_variants(
    cs: Split,
    params: dict[str, Any],
    variants: list[str],
    seeds: int,
    probe_score: Callable[[FeatureGAN], dict[str, Any]],
) -> tuple[dict[str, Any], dict[tuple[str, int], FeatureGAN], list[str]]:
    """Every featgan variant of the cold split fitted with each seed and both stopping rules.

    ``probe_score`` scores a model of the inner training part on the cold validation set (its
    ``"ndcg@10"`` decides the cold stop). Returns the record per candidate (``"label,
    warm-stopped"`` / ``"label, cold-stopped"``: parameters, the seeds' epochs and scores, the
    mean cold-validation NDCG@10), the models refitted on the training part per (candidate,
    seed), and the candidates in order."""
    selection: dict[str, Any] = {}
    variant_models: dict[tuple[str, int], FeatureGAN] = {}
    candidates: list[str] = []
    # Every variant with ``seeds`` training seeds: on a new product's placement, training
    # randomness (even the float rounding of another BLAS thread count) moves NDCG@10 by
    # more than the differences between settings, so settings are compared on seed means.
    # Each variant is refitted twice: for the epochs that early stopping on the (warm)
    # validation NDCG picks, and for the epochs with the best cold-validation NDCG@10 (the
    # new products' placement peaks earlier than the warm ranking).
    for label in variants:
        vp = {**params, **variant_params(label)}
        fits: dict[str, list[dict[str, Any]]] = {"warm": [], "cold": []}
        for seed in range(seeds):
            curve: list[dict[str, Any]] = []
            probe = FeatureGAN(**vp)
            probe.fit(
                cs.train_inner,
                TrainingOptions(
                    seed=seed,
                    validation=cs.validation,
                    validation_metric="ndcg@10",
                    callback=lambda epoch, logged, probe=probe, curve=curve: curve.append(probe_score(probe)),
                ),
            )
            stops = {
                "warm": max(int(probe.best_epoch), 1),
                "cold": int(np.argmax([c["ndcg@10"] for c in curve])) + 1,
            }
            for stop, epochs in stops.items():
                other = variant_models.get((f"{label}, warm-stopped", seed))
                if stop == "cold" and other is not None and epochs == stops["warm"]:
                    m = other
                else:
                    m = FeatureGAN(**{**vp, "epochs": epochs}).fit(cs.train, TrainingOptions(seed=seed))
                variant_models[f"{label}, {stop}-stopped", seed] = m
                fits[stop].append({
                    "seed": seed,
                    "epochs": epochs,
                    "best_epoch": epochs,
                    "probe_score": curve[epochs - 1],
                    "warm_validation_ndcg@10": probe.history[epochs - 1].get("val_ndcg@10"),
                    "fit_s": round(m.fit_seconds, 1),
                    "probe_fit_s": round(probe.fit_seconds, 1),
                })
                print("cold validation", label, stop, "seed", seed, "epochs", epochs,
                      curve[epochs - 1]["ndcg@10"], flush=True)
        for stop, runs in fits.items():
            mean = float(np.mean([f["probe_score"]["ndcg@10"] for f in runs]))
            key = f"{label}, {stop}-stopped"
            candidates.append(key)
            selection[key] = {"params": vp, "stop": stop, "cold_validation_ndcg@10_mean": round(mean, 4),
                              "seeds": runs}
    return selection, variant_models, candidates


class HybridScorer:
    """featgan's cosines for the customers with a history in ``history`` (customers x products),
    and its blends with a sales prior (:func:`blend_item_prior` of plain or buyer-weighted counts,
    :func:`buyer_weighted_counts`); the generated vectors are computed once."""

    def __init__(self, model: FeatureGAN, history: sp.csr_matrix, mask: np.ndarray) -> None:
        self.users = np.flatnonzero(np.diff(history.indptr) > 0)
        n_users = history.shape[0]
        indptr, items = model._user_rows(self.users)
        self.G = np.zeros((n_users, model.config.emb_dim), np.float32)
        self.G[self.users] = model.generate_vectors(indptr, items)[:, 0]
        self.cos = self.G[self.users] @ model.item_vectors.T
        self.row_of = np.full(n_users, -1, np.int64)
        self.row_of[self.users] = np.arange(len(self.users))
        self.has_history = np.diff(history.indptr) > 0
        self.mask = mask
        self.temperature = model.config.temperature

    def featgan(self, u: np.ndarray) -> np.ndarray:
        return self.cos[self.row_of[u]] + self.mask

    def hybrid(
        self, sales: sp.csr_matrix, weight: float, kernel: float, scale: float = 1.0, leave_own_out: bool = False
    ) -> Callable[[np.ndarray], np.ndarray]:
        """featgan + (buyer-weighted) sales prior; ``sales``: customers x products (binary)."""
        buyers = np.flatnonzero(np.diff(sales.indptr) > 0)
        sales_b = sales[buyers]

        def fn(u: np.ndarray) -> np.ndarray:
            counts = buyer_weighted_counts(self.G[u], self.G[buyers], self.has_history[buyers], sales_b, kernel)
            if leave_own_out:  # a customer's own purchase weighs exp(0) = 1 for them
                counts = np.maximum(counts - sales[u].toarray(), 0.0)
            return blend_item_prior(self.cos[self.row_of[u]], scale * counts, weight, self.temperature) + self.mask

        return fn


def prior_grid(
    scorer: HybridScorer,
    sales: sp.csr_matrix,
    targets: sp.csr_matrix,
    seen: sp.csr_matrix,
    scale: float,
    leave_own_out: bool,
    label: str,
) -> list[dict[str, Any]]:
    """Validation NDCG@10 of ``scorer``'s hybrids with the ``sales`` prior, for every
    (``prior_kernel``, ``cold_prior``) of PRIOR_KERNELS x PRIOR_WEIGHTS, on ``targets`` (``seen``
    excluded), for the customers with a history."""
    grid = []
    for kernel in PRIOR_KERNELS:
        for w in PRIOR_WEIGHTS:
            fn = scorer.hybrid(sales, w, kernel, scale, leave_own_out)
            res = evaluate(None, seen, targets, ks=KS, scores_fn=fn, users=scorer.users, prefetch=False)
            grid.append({"prior_kernel": kernel, "cold_prior": w, "ndcg@10": round(float(res.summary()["ndcg@10"]), 4)})
            print("validation", label, grid[-1], flush=True)
    return grid


def part_cold(
    ds: InteractionDataset,
    s: Split,
    out: dict[str, Any],
    params: dict[str, Any],
    prior_days: float = 4.0,
    refit_week1: bool = False,
    trend_days: int = 0,
    variants: list[str] | None = None,
    seeds: int = 1,
    val_period_prior: bool = False,
) -> None:
    cs, new = cold_split(ds, s)
    train, test = cs.train.matrix(), cs.test.matrix()
    with_history = np.flatnonzero(np.diff(train.indptr) > 0)
    cand = np.flatnonzero(new)
    mask = np.full(ds.n_items, -np.inf, np.float32)
    mask[cand] = 0.0
    # Raw TF-IDF title vectors (the featgan text encoder's vocabulary and weighting, fitted on the
    # products with training interactions, no SVD): the sharpest text similarity, for content-kNN.
    titles = list(ds.item_info.titles)

    def tfidf_knn(seen: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """content-kNN (TF-IDF) of ``users`` over the new products; -inf elsewhere."""
        scores = np.full((len(users), ds.n_items), -np.inf, np.float32)
        scores[:, cand] = tfidf_knn_scores(titles, np.flatnonzero(~new), seen, users, cand)
        return scores

    # Cold validation: the new products' purchases in the validation period, ranked among the new
    # products for the customers with an inner-training history (models fitted on the inner part,
    # which holds no new product either). It chooses between featgan variants (``variants``).
    inner = cs.train_inner.matrix()
    val_targets = s.validation.subset(new[s.validation.item_idx]).matrix()
    inner_users = np.flatnonzero(np.diff(inner.indptr) > 0)

    def cold_val(fn: Callable[[np.ndarray], np.ndarray]) -> Any:
        return evaluate(None, inner, val_targets, ks=KS, scores_fn=fn, users=inner_users, prefetch=False)

    inner_row = np.full(ds.n_users, -1, np.int64)
    inner_row[inner_users] = np.arange(len(inner_users))
    knn_inner = tfidf_knn(inner, inner_users)

    pop_rows, out["cold_predicted_popularity"] = day_one_popularity(ds, new, inner, train, cold_val, mask)

    def probe_score(m: FeatureGAN) -> dict[str, Any]:
        """Cold validation of featgan alone and of featgan + w * content-kNN (TF-IDF)."""
        fg = m.score_users(inner_users)
        rec: dict[str, Any] = {**summary(cold_val(lambda u: fg[inner_row[u]] + mask)), "hybrid_ndcg@10": {}}
        for w in KNN_WEIGHTS:
            res = cold_val(lambda u, w=w: fg[inner_row[u]] + w * knn_inner[inner_row[u]] + mask)
            rec["hybrid_ndcg@10"][f"{w:g}"] = round(float(res.summary()["ndcg@10"]), 4)
        return rec

    selection: dict[str, Any] = {}
    variant_models: dict[tuple[str, int], FeatureGAN] = {}
    candidates: list[str] = []
    if variants:
        selection, variant_models, candidates = fit_cold_variants(cs, params, variants, seeds, probe_score)
        # The best mean cold-validation NDCG@10; ties go to the earlier candidate.
        best_label = max(
            candidates, key=lambda v: (selection[v]["cold_validation_ndcg@10_mean"], -candidates.index(v))
        )
        params = selection[best_label]["params"]
        model, info = variant_models[best_label, 0], selection[best_label]["seeds"][0]
        # The content-kNN weight of the hybrid: best mean over the chosen variant's seeds.
        fits = selection[best_label]["seeds"]
        hybrid_means = {
            w: float(np.mean([f["probe_score"]["hybrid_ndcg@10"][f"{w:g}"] for f in fits])) for w in KNN_WEIGHTS
        }
        knn_weight = max(KNN_WEIGHTS, key=lambda w: (round(hybrid_means[w], 4), -w))
        out["cold_selection"] = {
            "design": "fit on the inner training part (no new product), targets: the new products' "
            "purchases in the validation period, candidates: the new products",
            "validation_pairs": int(val_targets.nnz),
            "content_knn_tfidf": summary(cold_val(lambda u: knn_inner[inner_row[u]])),
            "variants": selection,
            "chosen": best_label,
            "hybrid_ndcg@10_mean": {f"{w:g}": round(v, 4) for w, v in hybrid_means.items()},
            "chosen_knn_weight": knn_weight,
        }
        print("cold validation: content-kNN (TF-IDF)", out["cold_selection"]["content_knn_tfidf"], flush=True)
    else:
        model, info = fit_featgan(cs, params)
    # Second test set: purchases after the first week of the test period, so that the new
    # products' first-week sales can serve as a deployable "trending" signal.
    week_end = int(cs.test.timestamp.min()) + 7 * 86400
    early = cs.test.subset(cs.test.timestamp < week_end).matrix()
    late = cs.test.subset(cs.test.timestamp >= week_end).matrix()

    hs = HybridScorer(model, train, mask)
    row_of = hs.row_of
    featgan_scores, hybrid = hs.featgan, hs.hybrid

    # The prior's weights are chosen without the evaluated purchases (after week one), on two
    # validation designs inside the first week:
    # * "time": sales over its first prior_days days (scaled to a week); targets: the new-product
    #   purchases of the rest of the week (few customers);
    # * "own": sales over the whole week with each customer's own purchases left out; targets:
    #   the customer's new-product purchases in that week (every week-one buyer).
    val_cut = int(cs.test.timestamp.min()) + int(prior_days * 86400)
    prior_part = cs.test.subset(cs.test.timestamp < val_cut).matrix()
    val_part = cs.test.subset((cs.test.timestamp >= val_cut) & (cs.test.timestamp < week_end)).matrix()
    designs = {
        "time": (hs, prior_part, val_part, train + prior_part, 7.0 / prior_days, False),
        "own": (hs, early, early, train, 1.0, True),
    }
    if val_period_prior:
        # * "validation period": the same question one period earlier, on many more customers:
        #   featgan of the inner training part (the chosen setting and epochs, seed 0), the new
        #   products' sales in the first week of the validation period as the prior, and their
        #   purchases after that week as targets.
        inner_model = FeatureGAN(**{**params, "epochs": int(info["best_epoch"])})
        inner_model.fit(cs.train_inner, TrainingOptions(seed=0))
        v_new = s.validation.subset(new[s.validation.item_idx])
        v_end = int(v_new.timestamp.min()) + 7 * 86400
        v_early = v_new.subset(v_new.timestamp < v_end).matrix()
        v_late = v_new.subset(v_new.timestamp >= v_end).matrix()
        inner_scorer = HybridScorer(inner_model, inner, mask)
        designs["validation period"] = (inner_scorer, v_early, v_late, inner + v_early, 1.0, False)
    validation: dict[str, Any] = {}
    chosen: dict[tuple[float, float], list[str]] = {}
    for design, (scorer, sales, targets, seen, scale, loo) in designs.items():

        def val_ndcg(fn, seen=seen, targets=targets, users=scorer.users) -> tuple[float, Any]:
            res_v = evaluate(None, seen, targets, ks=KS, scores_fn=fn, users=users, prefetch=False)
            return round(float(res_v.summary()["ndcg@10"]), 4), res_v

        grid = prior_grid(scorer, sales, targets, seen, scale, loo, design)
        res_v = val_ndcg(scorer.featgan)[1]
        counts = np.asarray(sales.sum(axis=0)).ravel()
        if loo:
            pop_fn = lambda u, c=counts, m=sales: (c[None, :] - m[u].toarray()) + mask  # noqa: E731
        else:
            pop_fn = lambda u, c=counts: np.broadcast_to(c + mask, (len(u), ds.n_items))  # noqa: E731
        plain, personal = best_prior([r for r in grid if r["prior_kernel"] == 0]), best_prior(grid)
        for r in (plain, personal):
            chosen.setdefault((r["cold_prior"], r["prior_kernel"]), []).append(design)
        validation[design] = {
            "validation_pairs": int(targets.nnz),
            "validation_users": int(res_v.n_users),
            "popularity_ndcg@10": val_ndcg(pop_fn)[0],
            "featgan_ndcg@10": val_ndcg(scorer.featgan)[0],
            "grid": grid,
            "chosen_plain": plain,
            "chosen_buyer_weighted": personal,
        }
    validation["time"]["prior_days"] = prior_days
    # The model's own API gives the same scores as the benchmark's blend.
    (w0, k0) = max(chosen, key=lambda wk: wk[1])
    probe_users = with_history[:50]
    e_users, e_items = early.nonzero()
    model.set_item_sales(ds.users.decode(e_users), ds.items.decode(e_items), w0, k0)
    np.testing.assert_allclose(
        model.score_users(probe_users) + mask, hybrid(early, w0, k0)(probe_users), rtol=1e-4, atol=1e-4
    )
    model.clear_item_prior()
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

    hybrids = {}
    hybrid_label: dict[tuple[float, float], str] = {}
    for (w, kernel), which in sorted(chosen.items(), key=lambda kv: kv[0][::-1]):
        kind = "first-week sales prior" if kernel == 0 else "buyer-weighted first-week sales"
        label = f"featgan + {kind} (cold_prior = {w:g}, prior_kernel = {kernel:g}; chosen on {'+'.join(which)})"
        hybrids[label] = hybrid(early, w, kernel)
        hybrid_label[w, kernel] = label
    # The other training seeds of the chosen setting, each choosing its own weights on the
    # validation period with its own inner model (seed 0 is the design above).
    val_period_runs: dict[str, list[str]] = {}
    if val_period_prior:
        v_rec = validation["validation period"]
        for kind in ("chosen_plain", "chosen_buyer_weighted"):
            r = v_rec[kind]
            val_period_runs[kind] = [hybrid_label[r["cold_prior"], r["prior_kernel"]]]
    if val_period_prior and variants and seeds > 1:
        _, v_sales, v_targets, v_seen, _, _ = designs["validation period"]
        validation["validation period"]["other_seeds"] = []
        for k in range(1, seeds):
            epochs_k = int(selection[best_label]["seeds"][k]["best_epoch"])
            inner_k = FeatureGAN(**{**params, "epochs": epochs_k}).fit(cs.train_inner, TrainingOptions(seed=k))
            grid_k = prior_grid(HybridScorer(inner_k, inner, mask), v_sales, v_targets, v_seen, 1.0, False, f"seed {k}")
            picks = {
                "chosen_plain": best_prior([r for r in grid_k if r["prior_kernel"] == 0]),
                "chosen_buyer_weighted": best_prior(grid_k),
            }
            validation["validation period"]["other_seeds"].append({"seed": k, "grid": grid_k, **picks})
            test_k = HybridScorer(variant_models[best_label, k], train, mask)
            for kind, r in picks.items():
                w, kernel = r["cold_prior"], r["prior_kernel"]
                what = "first-week sales prior" if kernel == 0 else "buyer-weighted first-week sales"
                label = (f"featgan seed {k} + {what} (cold_prior = {w:g}, prior_kernel = {kernel:g}; "
                         "chosen on validation period)")
                hybrids[label] = test_k.hybrid(early, w, kernel)
                val_period_runs[kind].append(label)
    refit_rows: dict[str, Any] = {}
    if refit_week1:
        refit_rows, refit_info = refit_with_week1(
            cs, params, info["best_epoch"], with_history, mask, prior_days, week_end, prior_part, val_part, early
        )
        out["cold_refit_week1"] = refit_info
    trend_rows: dict[str, Any] = {}
    if trend_days:
        # featgan that learned each customer's weight on recent sales (trend_days): on day one
        # the new products have none (the training snapshot); after week one, their first-week
        # sales are its recent sales. The whole-period rows use the snapshot.
        tm, tinfo = fit_featgan(cs, {**params, "trend_days": trend_days})
        out["cold_trend"] = {"params": {**params, "trend_days": trend_days}, **tinfo}
        snapshot = tm.score_users(with_history)
        tm.set_recent_sales(list(ds.items.ids), early_counts)
        after = tm.score_users(with_history)
        label = f"featgan, trend_days = {trend_days} (first-week sales as its recent sales)"
        trend_rows[label] = (lambda u: snapshot[row_of[u]] + mask, lambda u: after[row_of[u]] + mask)
    variant_rows: dict[str, Any] = {}
    for (label, seed), vm in variant_models.items():
        if vm is not model:
            vs = vm.score_users(with_history)
            variant_rows[f"featgan variant: {label}, seed {seed}"] = lambda u, vs=vs: vs[row_of[u]] + mask
    knn_block, knn_tfidf = "content-kNN (featgan's text block)", "content-kNN (TF-IDF)"
    knn_test = tfidf_knn(train, with_history)
    knn_rows: dict[str, Any] = {}
    ensemble = f"featgan, mean score of the {seeds} seeds of the chosen variant"
    if variants:
        if seeds > 1:  # a seed ensemble: the seeds' cosines averaged
            ens = np.mean([variant_models[best_label, k].score_users(with_history) for k in range(seeds)], axis=0)
            variant_rows[ensemble] = lambda u: ens[row_of[u]] + mask
        for seed in range(seeds):
            vm = variant_models[best_label, seed]
            vs = vm.score_users(with_history) + knn_weight * knn_test
            key = f"featgan + {knn_weight:g} content-kNN (TF-IDF; weight chosen on cold validation)"
            knn_rows[key if seed == 0 else f"{key}, seed {seed}"] = lambda u, vs=vs: vs[row_of[u]] + mask
    scorers = {
        "featgan": featgan_scores,
        **variant_rows,
        knn_block: content_knn,
        knn_tfidf: lambda u: knn_test[row_of[u]],
        **knn_rows,
        **pop_rows,
        "popularity among new products, test period (own purchases left out; oracle)": test_popularity,
        "popularity among new products, first test week (trending)": first_week_popularity,
        **hybrids,
        **refit_rows,
        **trend_rows,
    }
    per_user: dict[str, np.ndarray] = {}
    per_user_whole: dict[str, np.ndarray] = {}
    rows = []
    for label, fn in scorers.items():
        row: dict[str, Any] = {"model": label}
        whole_fn, late_fn = fn if isinstance(fn, tuple) else (fn, fn)  # (day one, after week one)
        if label in trend_rows or ("first test week" not in label and "first-week" not in label):
            res = evaluate(None, train, test, ks=KS, scores_fn=whole_fn, users=with_history, prefetch=False)
            row["metrics"] = summary(res)
            per_user_whole[label] = res.per_user["ndcg@10"]
        # After week one, what the customer bought in week one is known and excluded.
        res_late = evaluate(None, train + early, late, ks=KS, scores_fn=late_fn, users=with_history, prefetch=False)
        row["metrics_after_week1"] = summary(res_late)
        per_user[label] = res_late.per_user["ndcg@10"]
        rows.append(row)
        print(label, row.get("metrics", {}).get("ndcg@10"), row["metrics_after_week1"]["ndcg@10"], flush=True)
    rows[0].update(info)
    whole_tests = {}
    day_one_refs = (knn_tfidf, knn_block, *pop_rows)
    for a in ["featgan", *variant_rows, *knn_rows]:
        for b in day_one_refs:
            whole_tests[f"{a} - {b}"] = paired(per_user_whole[a], per_user_whole[b])
            print("whole period:", a, "-", b, whole_tests[f"{a} - {b}"], flush=True)
    seed_means: dict[str, Any] = {}
    if variants:
        # Each variant's per-customer NDCG@10 averaged over its seeds (the expected result of
        # training it once), against content-kNN.
        for label in candidates:
            keys = ["featgan" if variant_models[label, k] is model else f"featgan variant: {label}, seed {k}"
                    for k in range(seeds)]
            for period, per in (("whole period", per_user_whole), ("after week 1", per_user)):
                mean_user = np.mean([per[k] for k in keys], axis=0)
                seed_ndcg = [round(float(per[k].mean()), 4) for k in keys]
                rec = {"ndcg@10_per_seed": seed_ndcg, "ndcg@10_mean": round(float(mean_user.mean()), 4)}
                for b in day_one_refs:
                    rec[f"- {b}"] = paired(mean_user, per[b])
                seed_means[f"{label}, {period}"] = rec
                print("seed mean:", label, period, rec, flush=True)
        for period, per in (("whole period", per_user_whole), ("after week 1", per_user)):
            mean_user = np.mean([per[k] for k in knn_rows], axis=0)
            rec = {
                "ndcg@10_per_seed": [round(float(per[k].mean()), 4) for k in knn_rows],
                "ndcg@10_mean": round(float(mean_user.mean()), 4),
                f"- {knn_tfidf}": paired(mean_user, per[knn_tfidf]),
            }
            seed_means[f"featgan + content-kNN, {period}"] = rec
            print("seed mean: featgan + content-kNN", period, rec, flush=True)
    tests = {}
    trending = "popularity among new products, first test week (trending)"
    pairs = [(h, trending) for h in hybrids] + [(h, "featgan") for h in hybrids]
    for r in refit_rows:
        pairs += [(r, trending), (r, "featgan"), (r, knn_tfidf)] + [(r, h) for h in hybrids]
    for r in trend_rows:
        pairs += [(r, trending), (r, "featgan"), (r, knn_tfidf)]
    for a, b in pairs:
        tests[f"{a} - {b}"] = paired(per_user[a], per_user[b])
        print(a, "-", b, tests[f"{a} - {b}"], flush=True)
    # Each validation-period choice over the training seeds: the expected result of training once.
    for kind, labels in val_period_runs.items():
        mean_user = np.mean([per_user[x] for x in labels], axis=0)
        key = f"validation-period hybrid ({kind}), after week 1"
        seed_means[key] = {
            "rows": labels,
            "ndcg@10_per_seed": [round(float(per_user[x].mean()), 4) for x in labels],
            "ndcg@10_mean": round(float(mean_user.mean()), 4),
            f"- {trending}": paired(mean_user, per_user[trending]),
        }
        print("seed mean:", key, seed_means[key], flush=True)
    out["cold"] = {
        "new_products": int(new.sum()),
        "test_pairs": int(test.nnz),
        "test_pairs_after_week1": int(late.nnz),
        "users_evaluated": int(res.n_users),
        "users_evaluated_after_week1": int(res_late.n_users),
        "rows": rows,
        "prior_weight_validation": validation,
        "paired_tests_whole_period": whole_tests,
        "seed_means": seed_means,
        "paired_tests_after_week1": tests,
    }
