#!/usr/bin/env bash
# docs/benchmarks-featgan.md, "Logs without product content": Amazon Beauty and Grocery reduced to
# (customer, product, timestamp), ingested as a user would (`--format events`), leave-last split,
# pop / EASE / featgan with defaults, and featgan with the old 32-d collaborative block
# (collab_dim_no_content = 0). Beauty has no timestamps: a customer's n-th product gets day n.
# A fast subset: k-core 5 customers / 10 products (KCORE="--min-user 1 --min-item 1" for all).
# Usage: bash benchmarks/featgan_id_only.sh [OUT_DIR]   (needs ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/id-only}
mkdir -p "$out"
rg=.venv/bin/retailgan
kcore=${KCORE:---min-user 5 --min-item 10}
export OMP_NUM_THREADS=1
.venv/bin/python - "$out" <<'PY'
import csv, gzip, sys
out = sys.argv[1]
with gzip.open("../shared/data/amazon-beauty-s3rec/Beauty.txt.gz", "rt") as f, open(f"{out}/beauty.csv", "w", newline="") as g:
    w = csv.writer(g)
    w.writerow(["customer", "product", "timestamp"])
    for line in f:
        user, *items = line.split()
        w.writerows([user, item, 1388534400 + 86400 * n] for n, item in enumerate(items))
with gzip.open("../shared/data/amazon-grocery-rechorus/train.csv.gz", "rt") as f, open(f"{out}/grocery.csv", "w", newline="") as g:
    r = csv.reader(f, delimiter="\t")
    next(r)
    w = csv.writer(g)
    w.writerow(["customer", "product", "timestamp"])
    w.writerows(r)
PY
for d in beauty grocery; do
    rm -f "$out/$d.duckdb"
    $rg ingest "$out/$d.csv" --format events --user-col customer --item-col product --time-col timestamp \
        --store "$out/$d.duckdb" > /dev/null
    $rg compare --store "$out/$d.duckdb" --protocol leave-last $kcore --models pop,ease,featgan --json "$out/$d.json"
    $rg compare --store "$out/$d.duckdb" --protocol leave-last $kcore --models featgan \
        --params '{"featgan": {"collab_dim_no_content": 0}}' --json "$out/$d-collab32.json"
done
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
keep = lambda r: {k: v for k, v in r["metrics"].items() if k.split("@")[0] in ("ndcg", "recall", "coverage")}
doc = {"command": "bash benchmarks/featgan_id_only.sh", "protocol": "leave-last", "seed": 0,
       "subset": "k-core: customers >= 5, products >= 10 (--min-user 5 --min-item 10)"}
for d in ("beauty", "grocery"):
    runs = {r["model"]: r for r in json.loads((out / f"{d}.json").read_text())["results"]}
    before = json.loads((out / f"{d}-collab32.json").read_text())["results"][0]
    doc[d] = {"test": {"pop": keep(runs["pop"]), "ease": keep(runs["ease"]),
                       "featgan (collab_dim_no_content 256, default)": keep(runs["featgan"]),
                       "featgan (collab_dim_no_content 0: 32-d block, as before)": keep(before)}}
Path("docs/results/featgan-id-only.json").write_text(json.dumps(doc, indent=1) + "\n")
PY
