"""What the service's diverse lists cost: accuracy, diversity and time of `diversity` / `diversify`.

    .venv/bin/python benchmarks/bench_diversity.py --models ease,ials --json docs/results/serve-diversity.json

On the bundled Online Retail log (temporal split, seed 0), each model is fitted on the training
part with the parameters of the Online Retail search (docs/results/online-retail-temporal.json)
and loaded as the service loads it (:class:`~retailgan.serving.engine.ModelBundle`). For every
customer with a training history and a test purchase of a product they had not bought, the
service's list (k = 10, training products excluded) is built at each ``diversity`` of
``--diversity`` with ``mmr`` and ``dpp`` (the service's own re-ranking,
``retailgan.serving.app.diverse_top_k``), and scored: NDCG@10 on the test purchases, intra-list
diversity@10 over the products' training customers (what ``retailgan compare`` reports) and in
the similarity the re-ranking used, and the median time of the re-ranking per request (the
settings interleaved per customer, so they share the machine's state).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.dataset import load_dataset
from retailgan.data.splits import split
from retailgan.evaluation.metrics import intra_list_diversity, rank_metrics
from retailgan.experiments import item_features_for_diversity
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.serving import schemas as S
from retailgan.serving.app import diverse_top_k
from retailgan.serving.engine import ModelBundle

REPO = Path(__file__).resolve().parents[1]
TUNED = REPO / "docs" / "results" / "online-retail-temporal.json"


def ensure_store(store: Path) -> Path:
    if not store.exists():
        from retailgan.data.ingest import ingest

        ingest(store, REPO / "data" / "online-retail" / "online_retail.csv.gz", "online-retail")
    return store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, default=REPO / "out" / "retail.duckdb")
    ap.add_argument("--models", default="ease,ials")
    ap.add_argument("--diversity", default="0,0.1,0.2,0.3,0.5")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ds = load_dataset(ensure_store(args.store))
    s = split(ds, "temporal", seed=0)
    train, test = s.train.matrix(), s.test.matrix()
    rel = sp.csr_matrix(test - test.multiply(train.astype(bool)))
    rel.eliminate_zeros()
    users = np.flatnonzero((np.diff(rel.indptr) > 0) & (np.diff(train.indptr) > 0))
    buyers = item_features_for_diversity(s.train)
    tuned = {r["model"]: r["params"] for r in json.loads(TUNED.read_text())["results"]}
    weights = [float(d) for d in args.diversity.split(",")]
    settings = [("plain", 0.0)] + [(how, d) for d in weights if d > 0 for how in ("mmr", "dpp")]
    out: dict[str, Any] = {
        "dataset": ds.name,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "customers": len(users),
        "results": {},
    }
    for name in args.models.split(","):
        params = tuned.get(name, {})
        model = get_model_class(name)(**params).fit(s.train, TrainingOptions(seed=0))
        with tempfile.TemporaryDirectory() as tmp:
            bundle = ModelBundle.load(model.save(Path(tmp) / name))
        tops = {key: np.full((len(users), 10), -1, np.int64) for key in settings}
        times: dict[tuple[str, float], list[float]] = {key: [] for key in settings}
        spaces: dict[tuple[str, float], list[float]] = {key: [] for key in settings}
        for r, u in enumerate(users):
            scores = bundle.score_user(int(u))
            scores[train[u].indices] = -np.inf
            for how, d in settings:
                how_ = "mmr" if how == "plain" else how
                req = S.RecommendationRequest(customer_id="x", k=10, diversity=d, diversify=how_)
                t = time.perf_counter()
                if d > 0:
                    top, _ = diverse_top_k(bundle, scores, req)
                else:
                    top, _ = bundle.top_k(scores, 10)
                times[how, d].append((time.perf_counter() - t) * 1000)
                tops[how, d][r, : len(top)] = top
                sim, _ = bundle.similarity(top)
                n = len(top)
                spaces[how, d].append(float((1 - sim[np.triu_indices(n, 1)]).mean()) if n > 1 else np.nan)
        rows = []
        for how, d in settings:
            top = tops[how, d]
            rows.append({
                "diversify": how,
                "diversity": d,
                "ndcg@10": round(float(rank_metrics(top, rel[users], (10,))["ndcg@10"].mean()), 4),
                "ild@10 (customers)": round(float(np.nanmean(intra_list_diversity(top, buyers, 10))), 4),
                "ild@10 (re-ranking similarity)": round(float(np.nanmean(spaces[how, d])), 4),
                "median_ms": round(statistics.median(times[how, d]), 3),
            })
            print(name, rows[-1], flush=True)
        out["results"][name] = {"params": params, "similarity": bundle.similarity(np.arange(2))[1], "rows": rows}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
