"""1 process against 2 data-parallel processes (torch.distributed, gloo) on the synthetic held-out
split of tests/test_distributed.py: NDCG@10 of CFGAN and ResGAN, and popularity for scale.

Usage: python benchmarks/ddp_quality.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retailgan import distributed
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import load_model
from tests.test_distributed import CONFIGS, _job, ndcg, problem


def main() -> None:
    train, test = problem()
    print(f"pop: NDCG@10 {ndcg(get_model_class('pop')().fit(train), train, test):.4f}")
    for name, params in CONFIGS.items():
        one = ndcg(get_model_class(name)(**params).fit(train, TrainingOptions(seed=0)), train, test)
        with tempfile.TemporaryDirectory() as tmp:
            distributed.launch(2, _job, tmp, name)
            two = ndcg(load_model(Path(tmp) / "model"), train, test)
        print(f"{name}: NDCG@10 1 process {one:.4f}, 2 processes {two:.4f}")


if __name__ == "__main__":
    main()
