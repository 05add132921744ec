#!/usr/bin/env bash
# The baseline tables of docs/benchmarks.md: ML-100K (cfgan-paper protocol) and Online Retail
# (temporal split), 30 Optuna trials per model on the validation part, seed 0.
# Usage: bash benchmarks/baselines.sh [OUT_DIR]   (needs ../shared/data for MovieLens)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/baselines}
mkdir -p "$out"
rg=.venv/bin/retailgan
rm -f "$out/ml100k.duckdb" "$out/retail.duckdb"
$rg ingest ../shared/data/movielens-100k --format movielens-100k --store "$out/ml100k.duckdb" > /dev/null
$rg compare --store "$out/ml100k.duckdb" --protocol cfgan-paper --models pop,itemknn,ease,ials,bpr \
    --tune-trials 30 --k 10,20 --seed 0 --json "$out/ml100k-cfgan-paper.json" \
    --plot "$out/ml100k-cfgan-paper.png" --report "$out/ml100k-cfgan-paper.md"
$rg ingest data/online-retail/online_retail.csv.gz --store "$out/retail.duckdb" > /dev/null
$rg compare --store "$out/retail.duckdb" --protocol temporal --models pop,itemknn,ease,ials,bpr \
    --tune-trials 30 --k 10,20 --seed 0 --json "$out/online-retail-temporal.json" \
    --plot "$out/online-retail-temporal.png" --report "$out/online-retail-temporal.md"
