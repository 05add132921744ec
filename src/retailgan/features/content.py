"""Product content text: the title, the category, and the content a dataset's own files carry
that the store's ``items`` table (``title``, ``category``, ``price``) does not.

The text encoder (:mod:`.text`) reads one string per product.
:func:`product_text` joins its parts; the readers below return ``item id -> extra text`` from the
raw public datasets, for the parts ingest leaves out of the ``items`` table:

* MovieLens-100K ``u.item``: every genre flag (ingest keeps the first as the category; the year
  is already in the title, e.g. ``Toy Story (1995)``);
* Amazon Beauty ``*_item2attributes.json`` (S3-Rec): every attribute id, brand and categories
  (ingest keeps the first); the ids carry no names, so they become tokens ``attr12``;
* Amazon Grocery ``item_meta.csv.gz`` (ReChorus): the also-bought and also-viewed lists (item
  ids, as tokens ``bought123`` / ``viewed123``: products bought or viewed with the same ones
  share tokens).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
from pathlib import Path

from retailgan.data.ingest import MOVIELENS_GENRES
from retailgan.errors import IngestError


def product_text(*parts: object) -> str:
    """The non-empty parts joined by ``". "`` (``None`` / NaN / blank parts left out)."""
    out = []
    for p in parts:
        if p is None or (isinstance(p, float) and p != p):
            continue
        s = " ".join(str(p).split())
        if s:
            out.append(s)
    return ". ".join(out)


def movielens_genres(u_item: str | Path) -> dict[str, str]:
    """``movie id -> "Animation, Children's, Comedy"`` from ``u.item`` (flags in ``u.genre`` order)."""
    out: dict[str, str] = {}
    with open(u_item, encoding="latin-1") as f:
        for line in f:
            cols = line.rstrip("\n").split("|")
            if len(cols) < 5 + len(MOVIELENS_GENRES):
                continue
            flags = cols[5 : 5 + len(MOVIELENS_GENRES)]
            names = [g for g, v in zip(MOVIELENS_GENRES, flags, strict=True) if v.strip() == "1" and g != "unknown"]
            out[cols[0].strip()] = ", ".join(names)
    return out


def s3rec_attributes(path: str | Path) -> dict[str, str]:
    """``item id -> "attr4 attr83 ..."`` from an S3-Rec ``*_item2attributes.json``."""
    try:
        attrs = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestError(f"not a JSON object of item -> attribute ids ({exc})", path=Path(path)) from None
    if not isinstance(attrs, dict):
        raise IngestError("expected a JSON object of item -> attribute ids", path=Path(path))
    return {str(k).strip(): " ".join(f"attr{a}" for a in v) for k, v in attrs.items() if isinstance(v, list)}


def rechorus_relations(path: str | Path) -> dict[str, str]:
    """``item id -> "category21 bought6285 ... viewed194 ..."`` from a ReChorus ``item_meta.csv(.gz)``
    (tab-separated ``item_id, i_category, r_complement, r_substitute``; category 0 = none)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            toks = []
            cat = (row.get("i_category") or "").strip()
            if cat and cat != "0":
                toks.append(f"category{cat}")
            for col, tag in (("r_complement", "bought"), ("r_substitute", "viewed")):
                try:
                    ids = ast.literal_eval((row.get(col) or "[]").strip() or "[]")
                except (ValueError, SyntaxError):
                    ids = []
                toks += [f"{tag}{int(i)}" for i in ids if isinstance(i, int)]
            out[str(row["item_id"]).strip()] = " ".join(toks)
    return out
