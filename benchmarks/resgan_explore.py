"""The design exploration behind ResGAN, on the validation slice of ML-100K ``cfgan-paper`` seed 0.

Every row fits on ``train_inner`` and reports validation NDCG@20 (the test part is never used):
EASE^R over a grid of ``l2``; ResGAN variants (reconstruction only, with and without
cross-fitting, residual learning rates, fine-tuned base, adversarial weights, the residual network
alone), each with its best epoch and its last epoch; and z-scored blends of EASE^R and iALS
(the tuned parameters of section 1 of docs/benchmarks.md).

Usage: python benchmarks/resgan_explore.py [--out out/resgan-explore.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cfgan_ml100k import load_ml100k

from retailgan.data.splits import split
from retailgan.evaluation import evaluate
from retailgan.models.base import Recommender, TrainingOptions
from retailgan.models.baselines import EASE, IALS
from retailgan.models.gan.resgan import ResGAN

REPO = Path(__file__).resolve().parents[1]
RESGAN_VARIANTS: dict[str, dict] = {
    "reconstruction only, lr 1e-3": {"adv_weight": 0.0, "lr_g": 1e-3},
    "reconstruction only, lr 3e-4": {"adv_weight": 0.0, "lr_g": 3e-4},
    "reconstruction only, lr 1e-4": {"adv_weight": 0.0, "lr_g": 1e-4},
    "reconstruction only, lr 1e-3, no cross-fitting": {"adv_weight": 0.0, "lr_g": 1e-3, "crossfit": 0},
    "fine-tuned base, lr 1e-5": {"adv_weight": 0.0, "lr_g": 1e-5, "base": "finetune", "scale": 30.0},
    "adversarial 0.1, lr 3e-4": {"adv_weight": 0.1, "lr_g": 3e-4},
    "adversarial 0.3, lr 3e-4": {"adv_weight": 0.3, "lr_g": 3e-4},
    "residual network alone (Mult-DAE), lr 1e-3": {"adv_weight": 0.0, "lr_g": 1e-3, "base": "none"},
}
EPOCHS = 40
IALS_PARAMS = {"factors": 128, "regularization": 35.05, "alpha": 5.71, "epochs": 8}


class _Scores(Recommender):
    """Fixed score matrix behind the recommender interface (for evaluating blends)."""

    name = "blend"

    def __init__(self, scores: np.ndarray, like: Recommender) -> None:
        self.S = scores
        self.users, self.items, self.seen = like.users, like.items, like.seen
        self.item_info, self.popularity = like.item_info, like.popularity

    def _fit(self, dataset, options) -> None:  # pragma: no cover - never fitted
        raise NotImplementedError

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.S[user_idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/movielens-100k/u.data")
    ap.add_argument("--out", type=Path, default=REPO / "out/resgan-explore.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = split(load_ml100k(args.data), "cfgan-paper", seed=0)
    train, val = s.train_inner.matrix(), s.validation.matrix()

    def ndcg(model: Recommender) -> float:
        return float(evaluate(model, train, val, ks=(20,)).summary()["ndcg@20"])

    rows: list[dict] = []
    for l2 in (100, 200, 300, 500, 800):
        rows.append({"row": f"EASE^R l2={l2}", "val_ndcg@20": ndcg(EASE(l2=l2).fit(s.train_inner))})
        print(rows[-1], flush=True)
    for label, params in RESGAN_VARIANTS.items():
        t0 = time.perf_counter()
        model = ResGAN(**{"l2": 500.0, "epochs": EPOCHS, "patience": EPOCHS, **params})
        model.fit(s.train_inner, TrainingOptions(seed=0, validation=s.validation))
        curve = [h["val_ndcg@20"] for h in model.history]
        rows.append(
            {
                "row": f"ResGAN {label}",
                "params": params,
                "best_epoch": int(np.argmax(curve)) + 1,
                "val_ndcg@20": max(curve),
                "last_epoch_val": curve[-1],
                "epoch_1_val": curve[0],
                "seconds": time.perf_counter() - t0,
            }
        )
        print({k: v for k, v in rows[-1].items() if k != "params"}, flush=True)
    ease = EASE(l2=355.6).fit(s.train_inner)
    ials = IALS(**IALS_PARAMS).fit(s.train_inner, TrainingOptions(seed=0))
    users = np.arange(train.shape[0])

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-9)

    se, si = z(ease.score_users(users)), z(ials.score_users(users))
    for w in (0.0, 0.2, 0.3, 0.5, 0.7, 1.0):
        rows.append(
            {
                "row": f"blend {1 - w:.1f} EASE^R + {w:.1f} iALS",
                "val_ndcg@20": ndcg(_Scores((1 - w) * se + w * si, ease)),
            }
        )
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print("\n| row | validation NDCG@20 | best epoch | epoch 1 | last epoch |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        extra = (
            f"{r['best_epoch']} | {r['epoch_1_val']:.4f} | {r['last_epoch_val']:.4f}"
            if "best_epoch" in r
            else "- | - | -"
        )
        print(f"| {r['row']} | {r['val_ndcg@20']:.4f} | {extra} |")


if __name__ == "__main__":
    main()
