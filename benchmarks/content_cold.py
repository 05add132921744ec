"""Product text for new products: TF-IDF (raw, reduced, inside the feature space), and what the
datasets' own content files add.

Cold-item split per seed: the products are split warm / cold 8:2 at random, every interaction of
a cold product is held out, the cold products are split 1:1 into validation and test. A
customer is evaluated on a part when they have a warm history and bought (rated) a product of
that part; the candidates are that part's products only (the cold-only ranking), Recall@20 and
NDCG@20 per customer, binary relevance.

Each product's text is :func:`retailgan.features.content.product_text` of its title, its
category and the content of the dataset's own files that the store leaves out (MovieLens genres,
Beauty attribute ids, Grocery also-bought / also-viewed lists). Scorers, each with each encoder:

* ``knn``: content-kNN, a cold product's score is the sum over the customer's warm history of
  the text cosine (negative ones as 0); encoders: ``tfidf`` (TF-IDF + SVD, the feature space's
  text block) and ``tfidf-raw`` (TF-IDF without the SVD);
* ``space``: the feature space (:class:`~retailgan.features.space.FeatureSpace`, default
  weights, or another ``text_dim``) fitted on the warm products; the cold products' vectors
  have their collaborative block imputed from their text neighbours (what featgan sees of a new
  product); the customer's profile is the mean vector of their history, scored by inner product.

TF-IDF is fitted on the warm products' texts, per seed. The all-MiniLM-L6-v2 sentence encoder
was measured beside these rows and lost on validation on every dataset; it left the code (its
rows stay in docs/results/text-encoders.json and docs/benchmarks-content.md).

    python benchmarks/content_cold.py --seeds 0,1,2 --json docs/results/text-encoders.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from retailgan.data.dataset import InteractionDataset, load_dataset
from retailgan.data.ingest import ingest
from retailgan.features import content
from retailgan.features.space import FeatureSpace, FeatureSpaceConfig
from retailgan.features.text import TextEncoder

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
K = 20

BEAUTY, GROCERY = DATA / "amazon-beauty-s3rec", DATA / "amazon-grocery-rechorus"
DATASETS: dict[str, dict[str, Any]] = {
    "online-retail": {"source": REPO / "data" / "online-retail" / "online_retail.csv.gz", "format": "online-retail"},
    "movielens-100k": {"source": DATA / "movielens-100k", "format": "movielens-100k",
                       "extra": lambda: content.movielens_genres(DATA / "movielens-100k" / "u.item")},
    "amazon-beauty": {"source": BEAUTY / "Beauty.txt.gz", "format": "amazon-s3rec",
                      "extra": lambda: content.s3rec_attributes(BEAUTY / "Beauty_item2attributes.json")},
    "amazon-grocery": {"source": GROCERY / "train.csv.gz", "format": "rechorus",
                       "extra": lambda: content.rechorus_relations(GROCERY / "item_meta.csv.gz")},
}  # fmt: skip


def load(name: str, work: Path) -> tuple[InteractionDataset, list[str], list[str]]:
    """The dataset, each product's full text, and its text from the store alone (title, category)."""
    spec = DATASETS[name]
    store = work / f"{name}.duckdb"
    if not store.exists():
        ingest(store, spec["source"], spec["format"])
    ds = load_dataset(store)
    extra = spec["extra"]() if "extra" in spec else {}
    info, ids = ds.item_info, ds.items.ids
    texts = [content.product_text(info.titles[j], info.categories[j], extra.get(str(ids[j])))
             for j in range(ds.n_items)]
    store_texts = [content.product_text(info.titles[j], info.categories[j]) for j in range(ds.n_items)]
    return ds, texts, store_texts


def rank_metrics(scores: np.ndarray, targets: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-row NDCG@K and Recall@K of ``scores`` (rows: customers) against binary ``targets``."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg, recall = np.zeros(len(scores)), np.zeros(len(scores))
    for r in range(len(scores)):
        rel = set(targets[r].indices.tolist())
        hits = np.array([c in rel for c in top[r]], float)
        ideal = disc[: min(len(rel), K)].sum()
        ndcg[r] = (hits * disc[: len(hits)]).sum() / ideal
        recall[r] = hits.sum() / len(rel)
    return ndcg, recall


def knn_scores(E: Any, hist: sp.csr_matrix, warm: np.ndarray, cand: np.ndarray) -> np.ndarray:
    sim = E[warm] @ E[cand].T
    sim = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
    return np.asarray(hist[:, warm] @ np.clip(sim, 0.0, None))


def run_seed(
    ds: InteractionDataset, texts: list[str], store_texts: list[str], seed: int,
    text_dims: tuple[int, ...] = (),
) -> dict[str, Any]:
    R = ds.matrix()
    n = ds.n_items
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_cold = round(0.2 * n)
    parts = {"validation": np.sort(perm[: n_cold // 2]), "test": np.sort(perm[n_cold // 2 : n_cold])}
    is_warm = np.ones(n, bool)
    is_warm[perm[:n_cold]] = False
    warm = np.flatnonzero(is_warm)
    hist = sp.csr_matrix(R @ sp.diags(is_warm.astype(np.float64)))
    hist.eliminate_zeros()
    tfidf_enc = TextEncoder(min_df=2, seed=seed).fit([texts[i] for i in warm])
    encoders: dict[str, Any] = {"tfidf": tfidf_enc.transform(texts), "tfidf-raw": tfidf_enc.tfidf(texts).tocsr()}
    if store_texts != texts:  # what the store alone carries (no dataset-file content)
        encoders["tfidf, store text only"] = TextEncoder(min_df=2, seed=seed).fit(
            [store_texts[i] for i in warm]).transform(store_texts)
    info = ds.item_info
    spaces = {}
    t0 = time.perf_counter()
    item_users = sp.csr_matrix(hist.T)
    configs = {"tfidf": FeatureSpaceConfig()}
    configs.update({f"tfidf, text_dim={d}": FeatureSpaceConfig(text_dim=d) for d in text_dims})
    for enc, cfg in configs.items():
        space = FeatureSpace(cfg)
        spaces[enc] = space.fit(np.asarray(texts, object), info.categories, info.prices, item_users, seed=seed)
    space_s = time.perf_counter() - t0
    out: dict[str, Any] = {"seed": seed, "n_warm": len(warm), "space_fit_s": round(space_s, 2)}
    for part, cand in parts.items():
        tgt = R[:, cand]
        users = np.flatnonzero((np.diff(hist.indptr) > 0) & (np.diff(tgt.indptr) > 0))
        h, t = hist[users], tgt[users]
        res: dict[str, Any] = {"n_products": len(cand), "n_customers": len(users), "rows": {}}
        for enc, E in encoders.items():
            nd, rc = rank_metrics(knn_scores(E, h, warm, cand), t)
            res["rows"][f"knn/{enc}"] = (nd, rc)
        for enc, X in spaces.items():
            prof = np.asarray(sp.diags(1.0 / np.maximum(np.diff(h.indptr), 1)) @ (h[:, warm] @ X[warm]))
            nd, rc = rank_metrics(prof @ X[cand].T, t)
            res["rows"][f"space/{enc}"] = (nd, rc)
        out[part] = res
    return out


def markdown(report: dict[str, Any]) -> str:
    """The results as the tables of docs/benchmarks-content.md (mean +- sd over the seeds)."""
    lines = []
    for name, d in report["datasets"].items():
        val, test = d["summary"]["validation"], d["summary"]["test"]
        lines += [f"**{name}** ({d['n_products']:,} products; best on validation: `{d['best_on_validation']}`)", "",
                  "| scorer / text | validation NDCG@20 | test NDCG@20 | test Recall@20 |", "| --- | --- | --- | --- |"]
        for row in val:
            cells = [val[row]["ndcg@20"], test[row]["ndcg@20"], test[row]["recall@20"]]
            lines.append(f"| {row} | " + " | ".join(f"{m:.4f} +- {sd:.4f}" for m, sd in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "content")
    ap.add_argument("--space-text-dims", default="", help="also the space with TF-IDF of these text_dim (e.g. 256)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--table", type=Path, default=None, help="print the markdown tables of a results JSON and exit")
    args = ap.parse_args(argv)
    # One BLAS thread: on the shared, loaded machine two spinning threads made each QR of the
    # SVDs about 10x slower. The scores do not depend on it.
    threadpool_limits(1)
    if args.table:
        print(markdown(json.loads(args.table.read_text(encoding="utf-8"))))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    dims = tuple(int(d) for d in args.space_text_dims.split(",") if d)
    old = json.loads(args.json.read_text(encoding="utf-8")) if args.json and args.json.exists() else {}
    report: dict[str, Any] = {
        "protocol": "cold items: products warm/cold 8:2, cold 1:1 validation/test, cold-only ranking, k=20",
        "seeds": seeds, "machine": f"{platform.machine()}, shared and loaded (other jobs running)",
        "datasets": {},
    }
    if old.get("seeds") == seeds:  # the other data sets' results of an earlier run are kept
        report["datasets"] = {k: v for k, v in old.get("datasets", {}).items() if k not in args.datasets.split(",")}
    for name in args.datasets.split(","):
        ds, texts, store_texts = load(name, args.work)
        per_seed = [run_seed(ds, texts, store_texts, s, dims) for s in seeds]
        rows = list(per_seed[0]["validation"]["rows"])
        summary: dict[str, Any] = {}
        for part in ("validation", "test"):
            summary[part] = {}
            for row in rows:
                nd = [float(r[part]["rows"][row][0].mean()) for r in per_seed]
                rc = [float(r[part]["rows"][row][1].mean()) for r in per_seed]
                summary[part][row] = {
                    "ndcg@20": [round(float(np.mean(nd)), 4), round(float(np.std(nd)), 4)],
                    "recall@20": [round(float(np.mean(rc)), 4), round(float(np.std(rc)), 4)],
                    "ndcg@20_per_seed": [round(x, 4) for x in nd],
                }
        best = max(rows, key=lambda r: summary["validation"][r]["ndcg@20"][0])
        report["datasets"][name] = {
            "n_products": ds.n_items, "n_customers": ds.n_users,
            "example_text": texts[int(np.argmax([len(t) > 0 for t in texts]))][:200],
            "n_customers_evaluated": {p: [r[p]["n_customers"] for r in per_seed] for p in ("validation", "test")},
            "summary": summary, "best_on_validation": best,
        }
        print(f"\n{name}: best on validation {best}", file=sys.stderr)
        for row in rows:
            v, t = summary["validation"][row], summary["test"][row]
            print(f"  {row:16s} val ndcg {v['ndcg@20'][0]:.4f}+-{v['ndcg@20'][1]:.4f}  "
                  f"test ndcg {t['ndcg@20'][0]:.4f}  recall {t['recall@20'][0]:.4f}", file=sys.stderr)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
