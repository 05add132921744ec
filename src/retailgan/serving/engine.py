"""Scoring for the service: any fitted recommender, with fold-in of new events and explanations.

A :class:`ModelBundle` is one loaded, validated model plus what the service derives from it. The
service swaps bundles atomically (one reference assignment); a request takes the current bundle
once at its start and uses it to the end, so a reload never changes a model under a request.

How a customer is scored (``strategy`` in responses):

* ``fold-in``: the model scores ad-hoc histories (``score_histories``: ``pop``, ``itemknn``,
  ``ease``, ``cfgan`` in user mode) and the customer has events posted since the model was
  trained: the model scores training history + new events, without retraining;
* ``session``: the same for an anonymous list of product ids;
* ``model``: a customer the model knows and no new events to fold in (or a model without
  ``score_histories``: ``ials``, ``bpr``, ``cfgan`` in item mode), scored from its trained
  profile; products from new events are still excluded from the list;
* ``popular``: a customer the model does not know (and no history it can fold in): products
  ranked by the number of customers who bought them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.errors import ModelFileError, RetailganError
from retailgan.explanations import contributions
from retailgan.models.diversify import gram
from retailgan.models.registry import name_of
from retailgan.persistence import ARRAYS_FILE, META_FILE, load_model, read_meta, recorded_arrays


class RequestError(RetailganError):
    """A request that cannot be served as asked (unknown ids, empty filters); a 4xx."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str | None
    category: str | None
    price: float | None


def model_version(path: Path) -> str:
    """First 12 hex digits of a SHA-256 that names the model directory's content: over model.json
    alone when it records the digest of arrays.safetensors (:func:`~retailgan.persistence.save_model`
    writes it, so the weights are named without reading them), else over both files."""
    return _directory_state(path)[0]


def _directory_state(path: Path) -> tuple[str, int | None, tuple[int, int, int]]:
    """The version, the arrays' size that model.json records (None: not recorded), and the arrays
    file's identity (inode, size, modification time): :meth:`ModelBundle.load` compares them
    before and after reading a directory."""
    meta = (path / META_FILE).read_bytes()
    recorded = recorded_arrays(meta)
    h = hashlib.sha256(meta)
    if recorded is None:
        with (path / ARRAYS_FILE).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    st = (path / ARRAYS_FILE).stat()
    return h.hexdigest()[:12], None if recorded is None else recorded[1], (st.st_ino, st.st_size, st.st_mtime_ns)


def add_catalogue_products(model: Any, products: Iterable[Product]) -> int:
    """Give a model that has ``add_products`` the catalogue products it does not know (embedded
    from their records); returns how many were added (0 for models without it)."""
    if not hasattr(model, "add_products"):
        return 0
    products = list(products)
    known = model.items.index([p.product_id for p in products], missing="negative") >= 0
    new = [p for p, k in zip(products, known, strict=True) if not k]
    if new:
        model.add_products([p.product_id for p in new], [p.title or "" for p in new],
                           [p.category for p in new], [p.price for p in new])
    return len(new)


@dataclass
class ModelBundle:
    """A loaded model and the arrays the service derives from it."""

    model: Any
    name: str
    version: str
    path: Path
    loaded_at: float
    foldin: bool
    prices: np.ndarray
    categories: np.ndarray
    titles: np.ndarray
    popularity: np.ndarray
    category_index: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def trend_days(self) -> int:
        """The recent-sales window of a model that follows them (featgan ``trend_days``), else 0."""
        return int(getattr(self.model.config, "trend_days", 0) or 0)

    def set_recent_sales(self, sales: dict[str, int]) -> None:
        """Give a :attr:`trend_days` model its recent sales (product -> customers; products the
        model does not know are skipped, products not listed count 0)."""
        known = self.model.items.index(list(sales), missing="negative") >= 0
        ids = [i for i, k in zip(sales, known, strict=True) if k]
        self.model.set_recent_sales(ids, [sales[i] for i in ids])

    @classmethod
    def load(cls, path: str | Path, catalogue: Mapping[str, Product] | None = None) -> ModelBundle:
        """Load and validate a model directory; raises :class:`ModelFileError` if it is unusable.

        A model that embeds products from content (``add_products``: featgan, the cold-start
        models) also gets the ``catalogue`` products it was not trained with (products without sales)."""
        path = Path(path)
        try:
            # Before anything is read: compared after, so that every file read is of one directory.
            before = _directory_state(path)
        except OSError as exc:
            if not (path / META_FILE).is_file():
                read_meta(path)  # its message: no such model directory / not a model directory
            raise ModelFileError(f"{path}: cannot read model files ({exc.strerror or exc})") from None
        version, recorded, (_, size, _) = before
        try:
            # Mapped, not read: every process serving or scoring this model shares one copy of its arrays.
            model = load_model(path, mmap=True)
        except RetailganError:
            raise
        except Exception as exc:  # a corrupt file can fail anywhere in numpy / scipy
            raise ModelFileError(f"{path}: model files are inconsistent ({type(exc).__name__}: {exc})") from None
        if catalogue is not None:
            add_catalogue_products(model, catalogue.values())
        info = model.item_info
        n = model.n_items
        if n == 0:
            raise ModelFileError(f"{path}: the model has no items")
        try:
            changed = _directory_state(path) != before
        except OSError:
            changed = True
        if changed:
            # `retailgan train --out` swapped the directory while we read it: the files read may
            # come from two models. Refuse; the next reload reads the new model whole.
            raise ModelFileError(f"{path}: the model directory changed while it was being loaded; reload again")
        if recorded is not None and recorded != size:  # after the array checks, which name the defect
            raise ModelFileError(f"{path / ARRAYS_FILE}: {size} bytes, {path / META_FILE} records "
                                 f"{recorded} (files of two models?)")
        foldin = _check_scores(model, path)
        cats = np.asarray([c if c is not None else "" for c in info.categories], dtype=object)
        index: dict[str, list[int]] = {}
        for j, c in enumerate(cats):
            if c:
                index.setdefault(c, []).append(j)
        bundle = cls(
            model=model,
            name=name_of(type(model)),
            version=version,
            path=path,
            loaded_at=time.time(),
            foldin=foldin,
            prices=np.asarray(info.prices, dtype=np.float64),
            categories=cats,
            titles=np.asarray(info.titles, dtype=object),
            popularity=np.asarray(model.popularity, dtype=np.float64),
            category_index={c: np.asarray(v, dtype=np.int64) for c, v in index.items()},
        )
        if model.n_users and bundle.fast_top_k(0):
            # Prepared here, not by the first request: the item order (and, for factor models, the
            # median customer norm over every customer's factors) takes a second at 1M customers.
            bundle.rank_known(0, 1, np.zeros(0, np.int64), None)
        return bundle

    def check_catalogue(self, catalogue: Collection[str], store: Path) -> None:
        """Refuse a model with products that are not in the store's catalogue (a model of another
        store or shop): the service would recommend products it cannot describe or record."""
        foreign = [str(i) for i in self.model.items.ids if str(i) not in catalogue]
        if foreign:
            shown = ", ".join(repr(i) for i in foreign[:5])
            raise ModelFileError(
                f"{self.path}: {len(foreign)} of the model's {self.model.n_items} products are not in the "
                f"catalogue of {store} (e.g. {shown}); was it trained on another store?"
            )

    # -- scoring ------------------------------------------------------------------------------

    def history_row(self, idx: Iterable[int]) -> sp.csr_matrix:
        cols = np.unique(np.fromiter(idx, dtype=np.int64))
        data = np.ones(len(cols), dtype=np.float32)
        return sp.csr_matrix((data, (np.zeros(len(cols), np.int64), cols)), shape=(1, self.model.n_items))

    def score_history(self, idx: Iterable[int]) -> np.ndarray:
        return np.asarray(self.model.score_histories(self.history_row(idx)), dtype=np.float64)[0]

    def score_user(self, u: int) -> np.ndarray:
        return np.asarray(self.model.score_users(np.asarray([u], dtype=np.int64)), dtype=np.float64)[0]

    def fast_top_k(self, u: int) -> bool:
        """Whether customer row ``u`` is ranked by :meth:`rank_known` rather than a dense row of scores:
        models whose exact top-k skips most of the catalogue (``exact_top_k``: factor models), and
        models searched through a retrieval index (featgan with ``index`` "hnsw" or "ivf": the
        lists of its ``recommend``)."""
        if u < 0:
            return False
        if getattr(self.model, "exact_top_k", False):
            return True
        return getattr(getattr(self.model, "config", None), "index", "exact") != "exact"

    def index_ranks_histories(self) -> bool:
        """Whether ad-hoc histories (sessions, a known customer's history with new events) are
        ranked by :meth:`rank_history` through the model's retrieval index rather than a dense row
        of scores: featgan with ``index`` "hnsw" or "ivf" (its ``recommend_histories`` lists)."""
        index = getattr(getattr(self.model, "config", None), "index", "exact")
        return hasattr(self.model, "_rank") and index != "exact"

    def rank_history(
        self, idx: Iterable[int], k: int, banned: np.ndarray, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best products for the history ``idx`` (column order, as
        :meth:`score_history` orders it), best first, without ``banned`` and only ``allowed`` (a
        mask; None: all), through the model's index: the lists of ``recommend_histories``."""
        items = np.unique(np.fromiter(idx, dtype=np.int64))
        samples, diversity = self.model._slate_params(None, None)
        top, scores = self.model._rank(np.asarray([0, len(items)], np.int64), items, k,
                                       [np.unique(np.asarray(banned, dtype=np.int64))],
                                       None if allowed is None else np.flatnonzero(allowed), samples, diversity)
        keep = top[0] >= 0
        return top[0][keep], np.asarray(scores[0][keep], dtype=np.float64)

    def rank_known(
        self, u: int, k: int, banned: np.ndarray, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best products for customer row ``u``, best first (ties by
        index), without ``banned`` and only ``allowed`` (a mask; None: all): the list of
        :meth:`top_k` on :meth:`score_user`, through the model's batch top-k
        (``Recommender._top_k_known``), which for factor models scores a prefix of the products."""
        cols = np.unique(np.asarray(banned, dtype=np.int64))
        mask = sp.csr_matrix((np.ones(len(cols), np.float32), cols, np.asarray([0, len(cols)])),
                             shape=(1, self.model.n_items))
        top, scores = self.model._top_k_known(np.asarray([u], dtype=np.int64), k, mask,
                                              None if allowed is None else np.flatnonzero(allowed))
        keep = top[0] >= 0
        return top[0][keep], np.asarray(scores[0][keep], dtype=np.float64)

    def item_index(self, ids: Sequence[str]) -> np.ndarray:
        return self.model.items.index(ids, missing="negative")

    def user_index(self, user_id: str) -> int:
        return int(self.model.users.index([user_id], missing="negative")[0])

    def seen_items(self, u: int) -> np.ndarray:
        seen = self.model.seen
        return seen.indices[seen.indptr[u] : seen.indptr[u + 1]].astype(np.int64)

    def top_k(self, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best finite scores, best first (ties by index)."""
        finite = np.flatnonzero(np.isfinite(scores))
        if len(finite) == 0:
            return finite, scores[finite]
        kk = min(k, len(finite))
        sub = scores[finite]
        part = np.argpartition(-sub, kk - 1)[:kk] if kk < len(sub) else np.arange(len(sub))
        top = finite[part]
        order = np.lexsort((top, -scores[top]))
        top = top[order]
        return top, scores[top]

    def similar(self, j: int) -> tuple[np.ndarray, str]:
        """Scores of every item as "similar to item j", and how they were computed."""
        m = self.model
        if self.foldin and self.name != "pop":
            return self.score_history([j]), "model"
        factors = getattr(m, "item_factors", None)
        if isinstance(factors, np.ndarray) and factors.shape[0] == m.n_items:
            f = factors.astype(np.float64)
            norms = np.linalg.norm(f, axis=1) + 1e-12
            return (f @ f[j]) / (norms * norms[j]), "item-factor cosine"
        # Co-occurrence cosine over the training customers: defined for every model.
        seen = m.seen.tocsc()
        col = seen[:, j]
        co = np.asarray((seen.T @ col).toarray()).ravel()
        counts = np.asarray(seen.getnnz(axis=0), dtype=np.float64)
        return co / (np.sqrt(counts * counts[j]) + 1e-12), "co-purchase cosine"

    @cached_property
    def _seen_by_product(self) -> sp.csc_matrix:
        return self.model.seen.tocsc()

    def similarity(self, pool: np.ndarray) -> tuple[np.ndarray, str]:
        """Cosine similarities between the ``pool`` products (a Gram matrix), in the model's own
        product space where it has one (featgan's retrieval vectors, factor models' item factors),
        else over the products' training customers; and the space's name."""
        m = self.model
        vectors = getattr(m, "item_vectors", None) if self.name == "featgan" else None
        if vectors is None:
            factors = getattr(m, "item_factors", None)
            if isinstance(factors, np.ndarray) and factors.shape[0] == m.n_items:
                vectors = factors
        if vectors is not None:
            return gram(np.asarray(vectors)[pool]), "model"
        cols = self._seen_by_product[:, pool].astype(np.float64)
        norms = np.sqrt(np.asarray(cols.multiply(cols).sum(axis=0)).ravel())
        cols = cols @ sp.diags(1.0 / np.maximum(norms, 1e-12))
        return np.asarray((cols.T @ cols).toarray()), "customers"

    def contributions(self, hist: np.ndarray, rec: np.ndarray) -> np.ndarray | None:
        """See :func:`retailgan.explanations.contributions`."""
        return contributions(self.model, hist, rec)


def _check_scores(model: Any, path: Path) -> bool:
    """Score one known user (and an ad-hoc history where supported); refuse non-finite scores.

    Returns whether the model folds in ad-hoc histories.
    """
    n = model.n_items
    try:
        if model.n_users:
            s = np.asarray(model.score_users(np.asarray([0], dtype=np.int64)))
            if s.shape != (1, n) or not np.isfinite(s).all():
                raise ModelFileError(f"{path}: the model's scores are not finite (corrupt weights?)")
        row = sp.csr_matrix((np.ones(1, np.float32), ([0], [0])), shape=(1, n))
        try:
            h = np.asarray(model.score_histories(row))
        except NotImplementedError:
            return False
        if h.shape != (1, n) or not np.isfinite(h).all():
            raise ModelFileError(f"{path}: the model's fold-in scores are not finite (corrupt weights?)")
        return True
    except RetailganError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: the model fails to score ({type(exc).__name__}: {exc})") from None
