#!/usr/bin/env bash
# OpenAPI conformance: `schemathesis run --checks all` against `retailgan serve` (pop on the bundled
# Online Retail data, an admin key) for MAX_TIME seconds; the checks' settings are in schemathesis.toml.
# Exits with schemathesis's status (0: no failures). docs/serving.md, "Conformance", has the result.
# Usage: bash benchmarks/bench_schemathesis.sh [OUT_DIR] [MAX_TIME=300] [SEED=0]   (BIN: the venv's bin folder)
set -euo pipefail
cd "$(dirname "$0")/.."
config=$(dirname "$(readlink -f "$0")")/../schemathesis.toml  # the repository's, wherever this runs from
out=${1:-out/schemathesis}
max_time=${2:-300}
seed=${3:-0}
if [ -z "${BIN:-}" ] && [ ! -x .venv/bin/retailgan ]; then BIN=$(dirname "$(command -v retailgan)"); fi  # an active venv
bin=${BIN:-.venv/bin}
mkdir -p "$out"
rm -f "$out/retail.duckdb" "$out/retail.duckdb.wal"
"$bin/retailgan" ingest data/online-retail/online_retail.csv.gz --store "$out/retail.duckdb" > /dev/null
"$bin/retailgan" train --store "$out/retail.duckdb" --model pop --out "$out/pop" > /dev/null
read -r key entry < <("$bin/python" -c 'from retailgan.serving.security import hash_key, new_key
k = new_key(); print(k, "ops:admin:" + hash_key(k))')
echo "$entry" > "$out/keys.txt"
port=$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Rate limits out of the way: the run sends thousands of requests a minute from one key.
"$bin/retailgan" serve --model-dir "$out/pop" --store "$out/retail.duckdb" --keys "$out/keys.txt" --port "$port" \
    --rate-limit 1000000 --rate-burst 1000000 > "$out/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null || true; wait "$server" 2> /dev/null || true' EXIT
for _ in $(seq 600); do
    "$bin/python" -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$port/readyz').status_code != 200)" \
        2> /dev/null && break
    kill -0 "$server" || { cat "$out/serve.log"; exit 1; }
    sleep 0.2
done
"$bin/schemathesis" --config-file "$config" run "http://127.0.0.1:$port/openapi.json" --checks all -H "X-API-Key: $key" \
    --max-time "$max_time" --seed "$seed" --generation-database none --no-color
