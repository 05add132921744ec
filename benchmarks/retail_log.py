"""A generated retail purchase log at named sizes, with enough structure for a temporal split.

Unlike the uniform event log of ``bench_ingest.py`` (every customer and product equally likely,
so nothing to learn), this log has:

* power-law customer activity (customer index ``n * u**2``) and product
  popularity (the rank within a department is ``size * u**3``, u uniform);
* departments (at least 4, one per 400 products) with titles built from the
  department's word and product words, and log-normal-ish prices per department;
* taste: each customer has a home department (70 % of purchases) and one of eight taste groups
  that rotate the department's popularity order, so customers with the same home and taste
  buy the same products (signal for collaborative models, not for popularity);
* seasonality: 15 % of purchases go to the department "in season" (changes every two weeks),
  and a quarter of the products launch during the year.

Everything is computed by DuckDB from ``range()`` in one streamed ``COPY`` per file, so memory
is bounded at any size. Files: ``events.parquet`` (customer, sku, event_time, action, qty,
unit_price) and ``products.csv.gz`` (sku, name, dept, price), read by ``retailgan ingest
--format events`` with :data:`EVENTS_MAPPING` / :data:`CATALOGUE_MAPPING`.

Usage: python benchmarks/retail_log.py --size S --out DIR [--memory-limit 4GB]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Size:
    customers: int
    products: int
    purchases: int


SIZES: dict[str, Size] = {
    "XS": Size(2_000, 500, 40_000),
    "S": Size(100_000, 20_000, 3_000_000),
    "M": Size(1_000_000, 100_000, 30_000_000),
    "L": Size(5_000_000, 500_000, 200_000_000),
}
EVENTS_MAPPING = {
    "user": "customer",
    "item": "sku",
    "timestamp": "event_time",
    "event_type": "action",
    "quantity": "qty",
    "price": "unit_price",
}
CATALOGUE_MAPPING = {"item": "sku", "title": "name", "category": "dept", "price": "price"}
WORDS = (
    "classic", "vintage", "mini", "large", "set", "pack", "deluxe", "retro", "garden", "party",
    "kitchen", "travel", "wooden", "glass", "metal", "paper", "cotton", "silver", "gold", "red",
    "blue", "green", "white", "black", "pink", "heart", "star", "flower", "bird", "christmas",
)  # fmt: skip
DEPARTMENT_WORDS = (
    "bags", "candles", "mugs", "cards", "lights", "toys", "frames", "boxes", "bowls", "signs",
    "clocks", "cushions", "jewellery", "stationery", "tins", "baskets", "plates", "ornaments",
    "umbrellas", "towels",
)  # fmt: skip
YEAR_S = 365 * 86400
TASTES = 8


def _sql_list(words: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{w}'" for w in words) + "]"


def generate(out: Path, size: Size, *, departments: int | None = None, memory_limit: str = "4GB",
             seed: int = 0) -> dict[str, float]:
    """Write ``events.parquet`` and ``products.csv.gz`` under ``out``; returns seconds per file."""
    import duckdb

    n_u, n_i, n_e = size.customers, size.products, size.purchases
    n_d = departments or max(4, n_i // 400)
    per_dept = -(-n_i // n_d)  # products per department (the last one may be short)
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    # u(x, k): a uniform number in [0, 1) from hashing (x, k, seed); hash() is a 64-bit mix.
    con.execute(f"CREATE MACRO u(x, k) AS (hash(x * 1000003 + k * 7919 + {seed}) % 1000000007) / 1000000007.0")
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    products = out / "products.csv.gz"
    con.execute(f"""
        COPY (
            SELECT 'p' || i AS sku,
                   ({_sql_list(DEPARTMENT_WORDS)})[1 + (i // {per_dept}) % {len(DEPARTMENT_WORDS)}] || ' '
                     || ({_sql_list(WORDS)})[1 + floor(u(i, 1) * {len(WORDS)})::INTEGER] || ' '
                     || ({_sql_list(WORDS)})[1 + floor(u(i, 2) * {len(WORDS)})::INTEGER] || ' ' || i AS name,
                   'd' || (i // {per_dept}) AS dept,
                   round(exp(0.5 + (i // {per_dept}) % 5 * 0.4 + 0.8 * (u(i, 3) + u(i, 4) - 1)), 2) AS price
            FROM range({n_i}) t(i)
        ) TO '{products}' (FORMAT csv, HEADER, COMPRESSION gzip)
    """)
    times["products_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    events = out / "events.parquet"
    # Per event i: customer c (power law), time, department (home / season / any), a rank within
    # the department (power law, rotated by the customer's taste), then the product. A quarter of
    # the products launch during the year; before that, the product of half its rank sells.
    con.execute(f"""
        COPY (
            WITH e AS (
                SELECT i,
                       floor({n_u} * pow(u(i, 10), 2.0))::BIGINT AS c,
                       floor(u(i, 11) * {YEAR_S})::BIGINT AS t,
                       u(i, 12) AS pick,
                       u(i, 13) AS r
                FROM range({n_e}) t(i)
            ), d AS (
                SELECT i, c, t, r,
                       CASE WHEN pick < 0.70 THEN hash(c * 31 + {seed}) % {n_d}
                            WHEN pick < 0.85 THEN (t // (14 * 86400)) % {n_d}
                            ELSE floor(u(i, 14) * {n_d})::BIGINT END AS dept,
                       hash(c * 17 + {seed}) % {TASTES} AS taste
                FROM e
            ), p AS (
                SELECT i, c, t, dept,
                       (floor({per_dept} * pow(r, 3.0))::BIGINT
                        + CASE WHEN u(i, 15) < 0.5 THEN taste * {per_dept} // {TASTES} ELSE 0 END)
                         % {per_dept} AS rank
                FROM d
            ), q AS (
                SELECT i, c, t, least(dept * {per_dept} + rank, {n_i - 1}) AS item FROM p
            )
            SELECT 'c' || c AS customer,
                   'p' || CASE WHEN u(item, 20) < 0.25 AND u(item, 21) * {YEAR_S} > t
                               THEN item - (item % {per_dept} + 1) // 2 ELSE item END AS sku,
                   TIMESTAMP '2024-01-01' + to_seconds(t) AS event_time,
                   'purchase' AS action,
                   (1 + floor(u(i, 16) * 3))::DOUBLE AS qty,
                   NULL::DOUBLE AS unit_price
            FROM q
        ) TO '{events}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)
    """)
    times["events_s"] = time.perf_counter() - t0
    con.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default="S")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    times = generate(args.out, SIZES[args.size], memory_limit=args.memory_limit, seed=args.seed)
    print(f"{args.size}: {SIZES[args.size]} written to {args.out} in {sum(times.values()):.1f} s {times}")


if __name__ == "__main__":
    main()
