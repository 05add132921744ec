"""Product content: the readers of the datasets' own content files, and saved text encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from retailgan.features import FeatureSpace, FeatureSpaceConfig, content

TITLES = np.array(["red tea cup", "blue tea cup", "ceramic mug for coffee", "red wine glass", "crystal wine goblet",
                   "wooden toy train", "toy railway set", None], dtype=object)  # fmt: skip
CATS = np.array(["kitchen", "kitchen", "kitchen", "bar", "bar", "toys", "toys", None], dtype=object)
PRICES = np.array([2.0, 2.5, 6.0, 4.0, 4.5, 12.0, 9.0, np.nan])


def _buyers() -> sp.csr_matrix:
    rows = [0, 0, 1, 1, 2, 3, 3, 4, 5, 6]
    cols = [0, 1, 1, 2, 0, 3, 4, 4, 5, 5]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(8, 6))


def test_spaces_saved_without_the_encoder_kind_load_as_tfidf(tmp_path: Path) -> None:
    space = FeatureSpace(FeatureSpaceConfig(text_dim=4, min_df=1, collab_dim=2))
    X = space.fit(TITLES, CATS, PRICES, _buyers())
    path = space.save(tmp_path / "f", np.arange(8), X)
    meta = json.loads((path / "features.json").read_text())
    del meta["text"]["kind"]  # the layout of earlier versions
    (path / "features.json").write_text(json.dumps(meta))
    loaded, _, _ = FeatureSpace.load(path)
    np.testing.assert_allclose(loaded.transform(TITLES, CATS, PRICES), space.transform(TITLES, CATS, PRICES), atol=1e-6)


def test_content_readers(tmp_path: Path) -> None:
    u_item = tmp_path / "u.item"
    flags = ["0"] * 19
    flags[3] = flags[5] = "1"
    u_item.write_text("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n", encoding="latin-1")
    assert content.movielens_genres(u_item) == {"1": "Animation, Comedy"}
    attrs = tmp_path / "B_item2attributes.json"
    attrs.write_text('{"4": [1, 2], "5": []}')
    assert content.s3rec_attributes(attrs) == {"4": "attr1 attr2", "5": ""}
    meta = tmp_path / "item_meta.csv"
    meta.write_text("item_id\ti_category\tr_complement\tr_substitute\n1\t0\t[7, 8]\t[9]\n2\t21\t[]\t[]\n")
    assert content.rechorus_relations(meta) == {"1": "bought7 bought8 viewed9", "2": "category21"}
    assert content.product_text("Toy Story (1995)", None, float("nan"), "  Animation,  Comedy ") == (
        "Toy Story (1995). Animation, Comedy"
    )
