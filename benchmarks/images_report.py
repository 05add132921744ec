"""Markdown tables for docs/benchmarks-images.md from `retailgan images evaluate` and bench_images.py JSON files.

Usage: python benchmarks/images_report.py EVALUATION_JSON [BENCH_IMAGES_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def quality_tables(ev: dict) -> str:
    rows = ev["rows"]
    lines = [
        "| set vs real test | FD | KID | precision | recall | density | coverage | GAN-test | GAN-train |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"generated": "generated (EMA G)", "real_train": "real train (reference)", "noise": "uniform noise"}
    for key, label in names.items():
        r = rows[key]
        gan_test = r.get("gan_test", r.get("gan_test_on_real_test"))
        lines.append(
            f"| {label} | {r['fd']:.2f} | {r['kid']:.2f} ± {r['kid_std']:.2f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | {gan_test:.4f} | {r['gan_train']:.4f} |"
        )
    lines += ["", "| class | FD generated | FD real train | FD noise |", "|:---|---:|---:|---:|"]
    for cls in rows["generated"]["fd_per_class"]:
        g, r, z = (rows[k]["fd_per_class"][cls] for k in ("generated", "real_train", "noise"))
        lines.append(f"| {cls} | {g:.2f} | {r:.2f} | {z:.1f} |")
    cc = ev["copy_check"]
    lines += [
        "",
        "| nearest training image (per-pixel RMS, pixels in [0, 1]) | generated | real test |",
        "|:---|---:|---:|",
        f"| minimum | {cc['generated_min']:.4f} | {cc['real_test_min']:.4f} |",
        f"| median | {cc['generated_median']:.4f} | {cc['real_test_median']:.4f} |",
        f"| images below {cc['threshold']} (near-copies) | {cc['generated_below_threshold']} "
        f"| {cc['real_test_below_threshold']} |",
        f"| share below the real test images' 1st percentile ({cc['real_test_p01']:.4f}) "
        f"| {cc['generated_below_real_p01']:.4f} | 0.01 |",
    ]
    return "\n".join(lines)


def personal_table(bench: dict) -> str:
    s = bench["personalisation"]["summary"]
    lines = [
        "| images of the customer's category | mean preference score (catalogue SDs) | evaluator: intended category |",
        "|:---|---:|---:|",
        f"| personalised (search, best 4 of 8 starts) | {s['personalised']:.2f} | {s['category_kept']:.3f} |",
        f"| random generated (64) | {s['random_generated']:.2f} | {s['random_category_kept']:.3f} |",
        f"| best 4 of 64 random generated | {s['random_generated_best_of_n']:.2f} | |",
        f"| average (pixel-mean) catalogue image | {s['average_catalogue_image']:.2f} | |",
        f"| all catalogue images (mean) | {s['catalogue_mean']:.2f} | |",
        f"| the customer's held-out liked images | {s['held_out_liked']:.2f} | |",
        "",
        f"Personalised beat random generated for {s['wins_vs_random']} of {s['pairs']} customer-category pairs and "
        f"the average catalogue image for {s['wins_vs_average_image']} of {s['pairs']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ev = json.loads(Path(sys.argv[1]).read_text())
    print(quality_tables(ev))
    if len(sys.argv) > 2:
        bench = json.loads(Path(sys.argv[2]).read_text())
        print()
        print(personal_table(bench))
        g = bench["generate_one_image_ms"]
        p = bench["personalise_s"]
        print(
            f"\nOne image: median {g['median']:.2f} ms wall ({g['median_cpu']:.2f} ms CPU; p90 wall {g['p90']:.2f}); "
            f"in batches of 256: {bench['generate_batch256_ms_per_image']:.3f} ms per image. Personalisation: median "
            f"{p['median']:.3f} s wall ({p['median_cpu']:.3f} s CPU; p90 wall {p['p90']:.3f}) over {p['pairs']} pairs. "
            f"Load average at start / end: {bench['load_average_at_start']} / {bench['load_average_at_end']}."
        )


if __name__ == "__main__":
    main()
