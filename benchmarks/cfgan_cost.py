"""What CFGAN's defaults cost on a larger log: the estimate printed before training, and a check of it
against timed epochs.

Problems: ``ml1m`` (the ML-1M-sized synthetic log of ``bench_cfgan.py``: 6,040 customers x 3,706
products, about 1M pairs; ``cfgan-paper`` split, fitted on the inner training part) or a store of
the scale benchmark (``--store``, temporal split, inner training part, as ``bench_scale.py`` fits
it). For each mode asked, CFGAN with its defaults (the authors' ML-100K settings) plus ``--params``
starts training: the memory check may refuse (recorded with its message); else the cost estimate (a
few timed G and D steps, extrapolated to an epoch and to ``epochs``) is recorded and ``--epochs N``
real epochs are timed (the first holds the start-up and is not compared), with the validation check
on the sampled customers, to compare with it.

Usage: python benchmarks/cfgan_cost.py [--store out/scale/store-S.duckdb]
       [--modes item,user] [--epochs 1] [--params '{"batch_size": 32}'] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cfgan import synthetic_ml1m

from retailgan.errors import RetailganError
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.cfgan import CFGAN


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def problem(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(training data, validation data or None, label)."""
    from retailgan.data.dataset import load_dataset
    from retailgan.data.splits import split

    if args.store is None:  # random 20 % test per customer, 20 % of the rest validation
        s = split(synthetic_ml1m(), "cfgan-paper", seed=0)
        return s.train_inner, s.validation, "synthetic ml-1m size"
    s = split(load_dataset(args.store), "temporal", seed=0, test_fraction=0.2)
    return s.train_inner, s.validation, args.store.stem


class _EstimateOnly(Exception):
    pass


def _stop(epoch: int) -> dict[str, float]:
    raise _EstimateOnly


def measure(mode: str, data: Any, validation: Any, epochs: int, params: dict[str, Any]) -> dict[str, Any]:
    """The estimate for the full schedule, then ``epochs`` real epochs (each with its validation
    check on at most 2,000 sampled customers, as ``fit`` runs it), timed."""
    full = CFGAN(mode=mode, **params)
    max_epochs = full.config.epochs  # type: ignore[attr-defined]
    model = CFGAN(**{**full.config.to_dict(), "epochs": max(epochs, 1)})  # type: ignore[attr-defined]
    out: dict[str, Any] = {"mode": mode, "config": {"mode": mode, **params}, "max_epochs": max_epochs}
    walls: list[float] = []
    cpus: list[float] = []
    last = [time.perf_counter(), _cpu_s()]

    def callback(epoch: int, logged: dict[str, float]) -> None:
        now, cpu = time.perf_counter(), _cpu_s()
        if epoch == 1:  # the first "epoch" also holds the start-up (estimate included): not compared
            out["first_epoch_with_startup_s"] = now - last[0]
        else:
            walls.append(now - last[0])
            cpus.append(cpu - last[1])
            print(f"  epoch {epoch}: {walls[-1]:.1f} s wall, {cpus[-1]:.1f} s CPU", flush=True)
        last[:] = [now, cpu]

    opts = TrainingOptions(seed=0, validation=validation, num_threads=1, callback=callback)
    if epochs == 0:  # the estimate only: stop where the first epoch would start
        model.train_epoch = _stop  # type: ignore[method-assign]
    try:
        model.fit(data, opts)
    except RetailganError as exc:
        return out | {"refused": str(exc), "peak_rss_mib": _peak_rss_mib()}
    except _EstimateOnly:
        pass
    assert model.epoch_seconds is not None
    out |= {"epoch_s_estimated": model.epoch_seconds, "steps_per_epoch": list(model._epoch_steps),
            "schedule_s_estimated": model.epoch_seconds * max_epochs,
            "epoch_s_measured": walls, "epoch_cpu_s_measured": cpus, "peak_rss_mib": _peak_rss_mib(),
            "load_average": os.getloadavg()}
    print(f"{mode}: {model.cost_estimate()}; for {max_epochs} epochs: {out['schedule_s_estimated']:.0f} s",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="a bench_scale store (default: the ml1m problem)")
    ap.add_argument("--modes", default="item")
    ap.add_argument("--epochs", type=int, default=3, help="real epochs timed after the estimate (0: the estimate only)")
    ap.add_argument("--params", default="{}", help="JSON overrides of the defaults")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    data, validation, label = problem(args)
    params = json.loads(args.params)
    result: dict[str, Any] = {
        "problem": label, "users": data.n_users, "items": data.n_items, "pairs": len(data),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "load_average_at_start": os.getloadavg(),
        "runs": [measure(m, data, validation, args.epochs, params) for m in args.modes.split(",") if m],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
