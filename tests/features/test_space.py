"""Product feature space: text encoder, blocks, incremental embedding of new products, cache."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.errors import ModelFileError
from retailgan.features import FeatureSpace, FeatureSpaceConfig, TextEncoder

TITLES = np.array(
    [
        "red tea cup",
        "blue tea cup",
        "green tea cup set",
        "red wine glass",
        "blue wine glass",
        "wine glass set",
        "wooden toy train",
        "toy train set",
    ],
    dtype=object,
)
CATS = np.array(["kitchen", "kitchen", "kitchen", "bar", "bar", "bar", "toys", None], dtype=object)
PRICES = np.array([2.0, 2.5, 6.0, 4.0, 4.5, 12.0, 9.0, np.nan])


def _buyers() -> sp.csr_matrix:
    # items x customers: cups bought by customers 0-2, glasses by 3-5, toys by 6-7; item 7 has none.
    rows = [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6]
    cols = [0, 1, 1, 2, 0, 3, 4, 4, 5, 3, 6, 7]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(8, 8))


def _fit() -> tuple[FeatureSpace, np.ndarray]:
    space = FeatureSpace(FeatureSpaceConfig(text_dim=4, min_df=1, collab_dim=2, price_bands=3, impute_neighbors=2))
    return space, space.fit(TITLES, CATS, PRICES, _buyers(), seed=0)


def test_text_encoder_is_deterministic_and_ignores_unknown_words():
    a = TextEncoder(dim=3, min_df=1, seed=0).fit(list(TITLES)).transform(["red tea cup", "zzz qqq", None])
    b = TextEncoder(dim=3, min_df=1, seed=0).fit(list(TITLES)).transform(["red tea cup", "zzz qqq", None])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(a[0]), 1.0, rtol=1e-5)
    assert not a[1].any() and not a[2].any()


def test_blocks_and_similar_products_are_close():
    space, X = _fit()
    dims = space.block_dims
    assert X.shape == (8, sum(dims.values())) and dims["category"] == 3 and dims["collab"] == 2
    assert dims["price"] == 3
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[3, 6]
    sl = space.block_slices()
    assert not X[7, sl["category"]].any() and not X[7, sl["price"]].any()  # missing category, price


def test_new_products_embed_without_refit():
    space, X = _fit()
    sl = space.block_slices()
    vocab_before = dict(space.text.vocabulary)
    # The same records give the same text / category / price blocks; the collaborative block is
    # imputed from the text neighbours (the products had interactions at fit time).
    again = space.transform(TITLES, CATS, PRICES)
    for block in ("text", "category", "price"):
        np.testing.assert_allclose(again[:, sl[block]], X[:, sl[block]], atol=1e-6)
    assert space.text.vocabulary == vocab_before
    new = space.transform(np.array(["yellow tea cup"], object), np.array(["kitchen"], object), np.array([2.2]))
    assert new[0, sl["collab"]].any()  # imputed from the cups
    assert np.argmax(X @ new[0]) in (0, 1, 2)
    unknown_cat = space.transform(np.array(["tea cup"], object), np.array(["garden"], object), np.array([1.0]))
    assert not unknown_cat[0, sl["category"]].any()


def test_product_without_interactions_gets_imputed_collab_at_fit():
    space, X = _fit()
    sl = space.block_slices()
    # Item 7 ("toy train set") has no buyers: its collaborative block comes from item 6's.
    assert X[7, sl["collab"]] @ X[6, sl["collab"]] > 0.9


def test_cache_round_trip(tmp_path):
    space, X = _fit()
    ids = np.array([f"p{i}" for i in range(8)], object)
    space.save(tmp_path / "feat", ids, X)
    loaded, ids2, X2 = FeatureSpace.load(tmp_path / "feat")
    assert list(ids2) == list(ids)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_allclose(loaded.transform(TITLES, CATS, PRICES), space.transform(TITLES, CATS, PRICES))
    (tmp_path / "feat" / "features.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="corrupt"):
        FeatureSpace.load(tmp_path / "feat")
    with pytest.raises(ModelFileError, match="missing"):
        FeatureSpace.load(tmp_path / "nothing")


def test_store_cache_refreshes_only_new_products(tmp_path):
    from retailgan.data.store import Store
    from retailgan.errors import StoreError
    from retailgan.features.store_cache import read_feature_cache, refresh_feature_cache, write_feature_cache

    path = tmp_path / "shop.duckdb"
    ids = np.array([f"p{i}" for i in range(8)], object)
    with Store.open(path) as store, store.transaction() as con:
        for i, t, c, p in zip(ids, TITLES, CATS, PRICES, strict=True):
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", [i, t, c, None if np.isnan(p) else p])
    with pytest.raises(StoreError, match="no feature cache"):
        refresh_feature_cache(path)
    space, X = _fit()
    assert write_feature_cache(path, space, ids, X) == 8
    assert refresh_feature_cache(path) == 0
    with Store.open(path) as store, store.transaction() as con:
        con.execute("INSERT INTO items VALUES ('p9', 'yellow tea cup', 'kitchen', 2.2)")
    assert refresh_feature_cache(path) == 1
    space2, ids2, X2 = read_feature_cache(path)
    assert list(ids2) == [*ids, "p9"]
    np.testing.assert_allclose(X2[:8], X, atol=1e-6)  # cached rows untouched
    expected = space.transform(np.array(["yellow tea cup"], object), np.array(["kitchen"], object), np.array([2.2]))
    np.testing.assert_allclose(X2[8], expected[0], atol=1e-6)
    assert space2.block_dims == space.block_dims


def test_text_encoder_tfidf_is_the_unreduced_space_of_transform():
    titles = ["red heart t-light holder", "white heart t-light holder", "red retro spot mug",
              "blue retro spot mug", "paper chain kit", "zzz unseen words"]
    enc = TextEncoder(dim=3, min_df=1).fit(titles[:5])
    m = enc.tfidf(titles)
    assert m.shape == (6, len(enc.vocabulary))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[:5], 1.0, rtol=1e-12)
    assert m[5].nnz == 0  # no known term: a zero row
    # Sharper than the SVD: the two heart holders are near, a heart holder and a mug are not.
    sim = (m @ m.T).toarray()
    assert sim[0, 1] > 0.5 and sim[0, 2] < sim[0, 1]
    # transform() is this matrix projected on the SVD basis and re-normalised.
    dense = np.asarray(m[:5] @ enc.components.T.astype(np.float64))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.transform(titles[:5]), dense, rtol=1e-5, atol=1e-6)


def test_id_only_catalogue_gets_the_wider_collaborative_block():
    # No title, category or price for any product: the collaborative block is the whole space.
    none = np.array([None] * 8, dtype=object)
    cfg = dict(text_dim=4, min_df=1, collab_dim=2, price_bands=3, impute_neighbors=2)
    space = FeatureSpace(FeatureSpaceConfig(**cfg, collab_dim_no_content=5))
    X = space.fit(none, none, np.full(8, np.nan), _buyers(), seed=0)
    assert space.block_dims == {"text": 0, "category": 0, "price": 0, "collab": 5}
    assert X.shape == (8, 5)
    np.testing.assert_allclose(np.linalg.norm(X[:7], axis=1), 1.0, rtol=1e-5)  # item 7: no buyers
    # 0 keeps collab_dim; with content the setting does not apply.
    off = FeatureSpace(FeatureSpaceConfig(**cfg, collab_dim_no_content=0))
    assert off.fit(none, none, np.full(8, np.nan), _buyers(), seed=0).shape == (8, 2)
    with_content = FeatureSpace(FeatureSpaceConfig(**cfg, collab_dim_no_content=5))
    with_content.fit(TITLES, CATS, PRICES, _buyers(), seed=0)
    assert with_content.block_dims["collab"] == 2
    np.testing.assert_array_equal(with_content.fit(TITLES, CATS, PRICES, _buyers(), seed=0), _fit()[1])


def test_imputation_blocks_bound_memory_and_keep_the_result(monkeypatch):
    import retailgan.features.space as space_module

    space, _ = _fit()
    whole = space.impute_collab(space.collab_text, exclude_self=True)
    monkeypatch.setattr(space_module, "IMPUTE_BLOCK_ENTRIES", 1)  # one product per block
    # (Matrix products of other shapes may round differently in the last bit.)
    np.testing.assert_allclose(space.impute_collab(space.collab_text, exclude_self=True), whole, rtol=1e-5, atol=1e-6)
