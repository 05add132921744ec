"""A product catalogue (CSV: ``item_id, title, category``) carrying the content of a dataset's own
files that ``retailgan ingest`` leaves out, for ``ingest --catalogue``: the title is that content
as text (:mod:`retailgan.features.content`), so every model that embeds products from their
record (content-kNN, the cold-start models, featgan) sees it.

* ``amazon-beauty``: ``Beauty_item2attributes.json`` -> title ``attr4 attr83 ...`` (brand and
  categories, ids without names), category the first attribute (what ingest keeps without it);
* ``amazon-grocery``: ``item_meta.csv.gz`` -> title ``category21 bought6285 ... viewed194 ...``
  (level-2 category, also-bought and also-viewed item ids), category the level-2 category id.

    python benchmarks/content_catalogue.py amazon-beauty ../shared/data/amazon-beauty-s3rec out/beauty-catalogue.csv
    retailgan ingest ../shared/data/amazon-beauty-s3rec/Beauty.txt.gz --format amazon-s3rec \\
        --catalogue out/beauty-catalogue.csv --catalogue-item-col item_id --title-col title \\
        --category-col category --store out/beauty.duckdb
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path

from retailgan.features import content


def beauty(folder: Path) -> list[tuple[str, str, str]]:
    """(item, attribute tokens, first attribute id) from ``Beauty_item2attributes.json``."""
    path = folder / "Beauty_item2attributes.json"
    text = content.s3rec_attributes(path)
    attrs = json.loads(path.read_text(encoding="utf-8"))
    return [(item, text[item], str(attrs[item][0]) if attrs[item] else "") for item in text]


def grocery(folder: Path) -> list[tuple[str, str, str]]:
    """(item, category / also-bought / also-viewed tokens, level-2 category id) from ``item_meta.csv.gz``."""
    path = folder / "item_meta.csv.gz"
    text = content.rechorus_relations(path)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        cats = {r["item_id"].strip(): (r.get("i_category") or "").strip() for r in csv.DictReader(f, delimiter="\t")}
    return [(item, text[item], "" if cats.get(item, "0") == "0" else cats[item]) for item in text]


READERS = {"amazon-beauty": beauty, "amazon-grocery": grocery}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=sorted(READERS))
    ap.add_argument("folder", type=Path, help="the dataset's folder (its README names the files)")
    ap.add_argument("out", type=Path, help="catalogue CSV to write")
    args = ap.parse_args()
    rows = READERS[args.dataset](args.folder)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "category"])
        w.writerows(rows)
    tmp.replace(args.out)
    print(f"{args.out}: {len(rows)} products")


if __name__ == "__main__":
    main()
