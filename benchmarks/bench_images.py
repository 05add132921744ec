"""Speed of image generation and personalisation, and personalised-image quality on held-out customers.

Wall and process CPU times are both reported: on a shared machine the CPU time shows what the
work costs when the core is free.

* Generation: the median time to generate one 28x28 image (EMA generator, eval mode, batch of 1,
  a fresh seed each call) over ``--repeats`` calls, after a warm-up; also the per-image time in
  batches of 256.
* Personalisation: for every held-out Fashion-MNIST customer (``retailgan.imagegen.personalize.
  define_customers``: 20 customers, 30 customer-category pairs, from the real *test* split), fit
  the preference and search the latent space for 4 images; the median wall time of fit + search,
  and the preference scores of the personalised images beside random generated images of the
  category, the average (pixel-mean) catalogue image of the category and the customer's
  held-out liked images; plus the share the evaluator assigns to the intended category. The
  catalogue's evaluator features are computed once per category before the timed part.

Usage: python benchmarks/bench_images.py --model-dir out/imagegen-fmnist
       [--evaluator-dir MODEL_DIR/evaluator] [--threads 1] [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from retailgan.imagegen.data import load_images
from retailgan.imagegen.evaluator import Evaluator
from retailgan.imagegen.model import ConditionalGAN
from retailgan.imagegen.personalize import define_customers, evaluate_customers, fit_preference, personalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--evaluator-dir", type=Path)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--n", type=int, default=4, help="Personalised images per customer and category.")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path, help="PNG: per customer, 4 liked | 4 personalised | 4 random generated.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model = ConditionalGAN.load(args.model_dir)
    ev = Evaluator.load(args.evaluator_dir or args.model_dir / "evaluator")
    train, test = load_images(args.data, "train"), load_images(args.data, "test")

    # -- generation speed
    for i in range(10):
        model.generate([i % model.n_classes], seed=i)
    single, single_cpu = [], []
    for i in range(args.repeats):
        t, tc = time.perf_counter(), time.process_time()
        model.generate([i % model.n_classes], seed=1000 + i)
        single.append(time.perf_counter() - t)
        single_cpu.append(time.process_time() - tc)
    batch = []
    for i in range(10):
        t = time.perf_counter()
        model.generate(np.arange(256) % model.n_classes, seed=i)
        batch.append((time.perf_counter() - t) / 256)

    # -- personalisation: latency of fit + search, and quality, on the held-out customers
    customers = define_customers(test, ev)
    # Catalogue features are computed once per category (as a service would), outside the timed part.
    cat_feats = {c: ev.features(train.images[train.labels == c]) for c in range(model.n_classes)}
    latency, latency_cpu = [], []
    first = customers[0].labels[0]
    warm = fit_preference(
        ev,
        test.images[customers[0].liked[first]],
        train.images[train.labels == first],
        first,
        catalogue_features=cat_feats[first],
    )
    personalise(model, ev, warm, args.n, seed=0)  # warm-up (first autograd pass)
    for cust in customers:
        for c in cust.labels:
            catalogue = train.images[train.labels == c]
            t, tc = time.perf_counter(), time.process_time()
            pref = fit_preference(ev, test.images[cust.liked[c]], catalogue, c, catalogue_features=cat_feats[c])
            personalise(model, ev, pref, args.n, seed=0)
            latency.append(time.perf_counter() - t)
            latency_cpu.append(time.process_time() - tc)
    quality = evaluate_customers(model, ev, train, test, customers, n=args.n)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "threads": args.threads,
        "model_version": model.version,
        "generate_one_image_ms": {
            "median": 1000 * statistics.median(single),
            "median_cpu": 1000 * statistics.median(single_cpu),
            "p90": 1000 * float(np.quantile(single, 0.9)),
            "repeats": args.repeats,
        },
        "generate_batch256_ms_per_image": 1000 * statistics.median(batch),
        "personalise_s": {
            "median": statistics.median(latency),
            "median_cpu": statistics.median(latency_cpu),
            "p90": float(np.quantile(latency, 0.9)),
            "pairs": len(latency),
            "what": f"fit preference on the liked images + latent search for {args.n} images",
        },
        "personalisation": quality,
    }
    if args.figure:
        figure(model, ev, train, test, customers[:6], args.figure, args.n, cat_feats)
    text = json.dumps(result, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "personalisation"}, indent=2))
    print(json.dumps(quality["summary"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")


def figure(model, ev, train, test, customers, path: Path, n: int, cat_feats: dict) -> None:
    """One row per customer: ``n`` liked real images, a gap, ``n`` personalised, a gap, ``n`` random generated."""
    from retailgan.imagegen.data import to_uint8
    from retailgan.imagegen.provenance import image_grid, provenance, save_png

    blank = np.full((1, *model.shape), 255, np.uint8)
    rows = []
    for cust in customers:
        c = cust.labels[0]
        liked = test.images[cust.liked[c][:n]]
        pref = fit_preference(
            ev, test.images[cust.liked[c]], train.images[train.labels == c], c, catalogue_features=cat_feats[c]
        )
        mine, _ = personalise(model, ev, pref, n, seed=0)
        rand = to_uint8(model.generate(np.full(n, c), seed=7))
        rows.append(np.concatenate([liked, blank, mine, blank, rand]))
    grid = image_grid(np.concatenate(rows), rows=len(rows), scale=2)
    save_png(grid, path, provenance("retailgan-cgan", model.version, 0, content="liked (real) | personalised | random"))


if __name__ == "__main__":
    main()
