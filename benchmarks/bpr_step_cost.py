"""CPU time of one BPR optimiser step, dense Adam against ``sparse`` (lazy Adam), at a log's shape.

Random (customer, bought, negative) triples of one default batch (8,192) through ``BPR._step``
with 64 factors on one torch thread: dense Adam's step touches every parameter, the lazy one
only the batch's rows.

Usage: python benchmarks/bpr_step_cost.py --users 1000000 --items 99903 --steps 5 [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from retailgan.models.baselines import BPR, BPRConfig, _LazyAdam


def step_cost(n_users: int, n_items: int, steps: int, sparse: bool) -> dict[str, float]:
    """Mean CPU and wall milliseconds of ``steps`` steps on random triples."""
    cfg = BPRConfig()
    model = BPR(sparse=sparse)
    model._U = torch.nn.Embedding(n_users, cfg.factors)
    model._V = torch.nn.Embedding(n_items, cfg.factors)
    model._b = torch.nn.Embedding(n_items, 1)
    params = [model._U.weight, model._V.weight, model._b.weight]
    model._opt = _LazyAdam(params, cfg.lr) if sparse else torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        u, i, j = (torch.randint(0, n, (cfg.batch_size,), generator=gen) for n in (n_users, n_items, n_items))
        model._step(u, i, j)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms": cpu / steps * 1e3, "wall_ms": wall / steps * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {"users": args.users, "items": args.items, "steps": args.steps, "load_average_before": os.getloadavg()}
    for sparse in (True, False):
        out["lazy" if sparse else "dense"] = step_cost(args.users, args.items, args.steps, sparse)
        print(("lazy" if sparse else "dense"), out["lazy" if sparse else "dense"], flush=True)
    out["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
