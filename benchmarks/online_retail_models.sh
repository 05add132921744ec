#!/usr/bin/env bash
# Section 2 of docs/benchmarks.md: every model on the Online Retail temporal split, seed 0, with
# the hyperparameters in docs/results/online-retail-temporal-params.json (baselines: chosen by the
# 30-trial validation search of benchmarks/baselines.sh; cfgan and resgan: their ML-100K
# validation-tuned settings, resgan's base l2 = EASE's; featgan: its defaults; recent: EASE plus the
# sales of the last 7 days, window and weight chosen on validation). Epoch counts of iterative models are
# picked by early stopping on the validation part; the test part is used once.
# Usage: bash benchmarks/online_retail_models.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/online-retail-models}
mkdir -p "$out"
rg=.venv/bin/retailgan
rm -f "$out/retail.duckdb"
$rg ingest data/online-retail/online_retail.csv.gz --store "$out/retail.duckdb" > /dev/null
$rg compare --store "$out/retail.duckdb" --protocol temporal --models pop,itemknn,ease,ials,bpr,cfgan,resgan,featgan,recent \
    --tune-trials 0 --k 10,20 --seed 0 --params "$(cat docs/results/online-retail-temporal-params.json)" \
    --json "$out/online-retail-temporal.json" --plot "$out/online-retail-temporal.png" \
    --report "$out/online-retail-temporal.md"
