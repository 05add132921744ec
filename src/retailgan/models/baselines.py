"""Strong, simple baselines every GAN must beat: popularity, ItemKNN, EASE^R, iALS, BPR-MF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError
from retailgan.models.base import IterativeRecommender, ModelConfig, Recommender, TrainingOptions, clear_rows
from retailgan.models.fast_topk import FactorIndex, FactorItems, ann_factor_top_k, factor_top_k, sparse_item_top_k
from retailgan.models.memory import require_memory
from retailgan.persistence import take, take_csr


def _feedback(dataset: InteractionDataset, kind: str) -> sp.csr_matrix:
    if kind == "binary":
        return dataset.matrix()
    if kind == "weight":
        return dataset.matrix(binary=False)
    raise ConfigError(f"feedback must be 'binary' or 'weight', got {kind!r}")


# -- popularity -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PopConfig(ModelConfig):
    recent_days: int = 0
    """Count only the users of the last ``recent_days`` days of the training data ("trending";
    ties by all-time popularity); 0 counts all of it."""

    def validate(self) -> None:
        self.require("pop", [(self.recent_days >= 0, "recent_days >= 0")])


class MostPopular(Recommender):
    """Ranks items by the number of distinct training users (same list for everyone), or by
    those of the last ``recent_days`` days."""

    name = "pop"
    config_class = PopConfig

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self.config
        assert isinstance(cfg, PopConfig) and self.popularity is not None
        cfg.validate()
        if cfg.recent_days and len(dataset.timestamp):
            since = int(dataset.timestamp.max()) - cfg.recent_days * 86400
            recent = np.bincount(dataset.item_idx[dataset.timestamp > since], minlength=self.n_items)
            # All-time popularity only breaks ties: scaled below one recent user.
            self.popularity = (recent + self.popularity / (1.0 + self.popularity.max())).astype(np.float32)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert self.popularity is not None
        return np.broadcast_to(self.popularity, (len(user_idx), self.n_items)).astype(np.float32)

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        return self.score_users(np.zeros(history.shape[0], np.int64))


# -- item-item models ---------------------------------------------------------------------------


class _ItemItem(Recommender):
    """Scores = history @ W for an items x items matrix W (dense or sparse)."""

    W: np.ndarray | sp.csr_matrix | None = None

    def _history(self, user_idx: np.ndarray) -> sp.csr_matrix:
        return self._train_matrix[user_idx]

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.score_histories(self._train_matrix[np.asarray(user_idx, dtype=np.int64)])

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        out = history.astype(np.float32) @ self.W
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float32)

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sparse weights (ItemKNN): sparse history x W products, no dense row
        (:func:`~retailgan.models.fast_topk.sparse_item_top_k`); dense W: the generic path."""
        if not sp.issparse(self.W):
            return super()._top_k_known(user_idx, k, banned, allowed)
        user_idx = np.asarray(user_idx, dtype=np.int64)
        W = sp.csr_matrix(self.W, dtype=np.float32)

        def dense(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return Recommender._top_k_known(self, user_idx[rows], k, banned[rows], allowed)

        return sparse_item_top_k(self._train_matrix[user_idx], W, k, banned, allowed, dense)

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        if getattr(self, "_feedback_matrix", None) is not None:
            self._feedback_matrix = clear_rows(self._feedback_matrix, user_idx)

    def _load_feedback(self, arrays: dict[str, np.ndarray]) -> None:
        """The weighted feedback matrix saved as ``F.*`` (only non-binary feedback saves one)."""
        if self.config.feedback != "binary":  # type: ignore[attr-defined]
            self._feedback_matrix = take_csr(arrays, "F", (self.n_users, self.n_items))

    @property
    def _train_matrix(self) -> sp.csr_matrix:
        # The feedback the model was fitted on; binary feedback equals the ``seen`` matrix.
        if getattr(self, "_feedback_matrix", None) is not None:
            return self._feedback_matrix
        assert self.seen is not None
        return self.seen


@dataclass(frozen=True)
class ItemKNNConfig(ModelConfig):
    neighbors: int = 100
    """Keep this many most similar items per item (0 = all)."""
    shrink: float = 10.0
    """Shrinkage added to the cosine denominator (Koren-style damping for rarely co-seen items)."""
    feedback: str = "binary"


class ItemKNN(_ItemItem):
    """Item-based kNN with shrunk cosine similarity."""

    name = "itemknn"
    config_class = ItemKNNConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "neighbors": trial.suggest_int("neighbors", 5, 1000, log=True),
            "shrink": trial.suggest_float("shrink", 0.0, 500.0),
        }

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: ItemKNNConfig = self.config  # type: ignore[assignment]
        if cfg.neighbors < 0 or cfg.shrink < 0:
            raise ConfigError("itemknn: neighbors and shrink must be >= 0")
        X = _feedback(dataset, cfg.feedback)
        self._feedback_matrix = X if cfg.feedback != "binary" else None
        Xc = X.tocsc().astype(np.float32)
        norms = np.sqrt(np.asarray(Xc.multiply(Xc).sum(axis=0)).ravel())
        n = X.shape[1]
        k = n - 1 if cfg.neighbors == 0 else min(cfg.neighbors, n - 1)
        rows, cols, vals = [], [], []
        block = 1024
        XtT = Xc.T.tocsr()
        for start in range(0, n, block):
            stop = min(start + block, n)
            co = (XtT @ Xc[:, start:stop]).toarray()  # (n, b): co-occurrence with the target block
            sim = co / (norms[:, None] * norms[None, start:stop] + cfg.shrink + 1e-12)
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0  # no self-similarity
            if k < n - 1:
                part = np.argpartition(-sim, k - 1, axis=0)[:k]
                v = np.take_along_axis(sim, part, axis=0)
            else:
                part = np.tile(np.arange(n)[:, None], (1, stop - start))
                v = sim
            keep = v > 0
            rows.append(part[keep])
            cols.append(np.nonzero(keep)[1] + start)
            vals.append(v[keep])
        # W[j, i]: how much having item j supports recommending item i.
        self.W = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
        )

    def _state(self) -> dict[str, np.ndarray]:
        W = self.W.tocsr()  # type: ignore[union-attr]
        state = {"W.data": W.data, "W.indices": W.indices.astype(np.int64), "W.indptr": W.indptr.astype(np.int64)}
        if getattr(self, "_feedback_matrix", None) is not None:
            F = self._feedback_matrix
            state.update(
                {"F.data": F.data, "F.indices": F.indices.astype(np.int64), "F.indptr": F.indptr.astype(np.int64)}
            )
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.W = take_csr(arrays, "W", (self.n_items, self.n_items))
        self._load_feedback(arrays)


EASE_ALTERNATIVE = "sansa (the sparse approximate EASE^R) or ials"


def ease_bytes(n_items: int, block: int = 2048) -> int:
    """Peak bytes of :func:`ease_weights`: the float64 Gram matrix inverted in place, the float32
    weights copied from it, and one block of Gram columns."""
    return 12 * n_items * n_items + 8 * n_items * block


def ease_weights(X: sp.spmatrix, l2: float, block: int = 2048) -> np.ndarray:
    """EASE^R's closed-form item-item matrix (zero diagonal) for a users x items matrix.

    One dense float64 items x items array is allocated (the Gram matrix, built block by block
    and inverted in place by Cholesky), plus the float32 result: 12 * n_items**2 bytes at peak.
    """
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits

    n = X.shape[1]
    Xc = sp.csc_matrix(X, dtype=np.float64)
    XT = Xc.T.tocsr()
    G = np.empty((n, n), dtype=np.float64)
    for s in range(0, n, block):
        G[:, s : s + block] = (XT @ Xc[:, s : s + block]).toarray()
    G[np.diag_indices(n)] += l2
    # G is symmetric, so its transpose is the same matrix in Fortran order: LAPACK works in place.
    # One BLAS thread: scipy's bundled OpenBLAS (0.3.30) segfaults in a multi-threaded dpotrf on
    # a 20,000 x 20,000 matrix (measured), and a single-threaded one takes about 35 s there.
    with threadpool_limits(1, "blas"):
        c, info = lapack.dpotrf(G.T, lower=0, clean=0, overwrite_a=1)
        if info == 0:
            c, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise ConfigError(f"ease: the regularised Gram matrix is not positive definite (LAPACK info {info})")
    P = c.T  # the inverse's lower triangle holds the result (C order); mirror it to the upper
    for s in range(0, n, block):
        e = min(s + block, n)
        P[s:e, e:] = P[e:, s:e].T
        d = P[s:e, s:e]
        upper = np.triu_indices(e - s, 1)
        d[upper] = d.T[upper]
    diag = np.diag(P).copy()
    P /= -diag[None, :]
    P[np.diag_indices(n)] = 0.0
    return P.astype(np.float32)


@dataclass(frozen=True)
class EASEConfig(ModelConfig):
    l2: float = 500.0
    """L2 penalty lambda on the item-item weights (Steck 2019)."""
    feedback: str = "binary"


class EASE(_ItemItem):
    """EASE^R (Steck, WWW 2019): closed-form item-item regression with a zero diagonal."""

    name = "ease"
    config_class = EASEConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"l2": trial.suggest_float("l2", 1.0, 1e4, log=True)}

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: EASEConfig = self.config  # type: ignore[assignment]
        if cfg.l2 <= 0:
            raise ConfigError(f"ease: l2 must be > 0, got {cfg.l2}")
        X = _feedback(dataset, cfg.feedback)
        require_memory("ease", ease_bytes(X.shape[1]), "its item x item matrices", EASE_ALTERNATIVE)
        self._feedback_matrix = X if cfg.feedback != "binary" else None
        self.W = ease_weights(X, cfg.l2)

    def _state(self) -> dict[str, np.ndarray]:
        state = {"W": np.asarray(self.W)}
        if getattr(self, "_feedback_matrix", None) is not None:
            F = self._feedback_matrix
            state.update(
                {"F.data": F.data, "F.indices": F.indices.astype(np.int64), "F.indptr": F.indptr.astype(np.int64)}
            )
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.W = take(arrays, "W", np.float32, (self.n_items, self.n_items))
        self._load_feedback(arrays)


# -- matrix factorisation ------------------------------------------------------------------------


class _Factorised(IterativeRecommender):
    """Scores = user_factors @ item_factors.T (+ item bias)."""

    exact_top_k = True

    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray | None = None
    saves_bias: bool = False
    """Whether the model has (and saves) an item bias."""

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        s = self.user_factors[np.asarray(user_idx, dtype=np.int64)] @ self.item_factors.T
        if self.item_bias is not None:
            s = s + self.item_bias[None, :]
        return s.astype(np.float32, copy=False)

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Float32 user x item factor blocks over norm-ordered item prefixes, exact
        (:func:`~retailgan.models.fast_topk.factor_top_k`), or with :meth:`use_index` an
        approximate index over the whole catalogue (:func:`~retailgan.models.fast_topk.ann_factor_top_k`)."""
        U = self.user_factors[np.asarray(user_idx, dtype=np.int64)]
        ann = self._ann_items()
        if ann is not None and allowed is None:
            return ann_factor_top_k(U, ann, k, banned,
                                    lambda rows: factor_top_k(U[rows], self._factor_items(), k, banned[rows], None))
        return factor_top_k(U, self._factor_items(), k, banned, allowed)

    def use_index(self, kind: str, **params: Any) -> None:
        if kind not in ("exact", "ivf", "hnsw"):
            raise ConfigError(f"unknown index kind {kind!r}; choose from exact, ivf, hnsw")
        self._ann_spec = None if kind == "exact" else (kind, params)

    def _ann_items(self) -> FactorIndex | None:
        """The index of :meth:`use_index` (None: exact), built on first use and again when the
        factors or the index's settings change."""
        spec = getattr(self, "_ann_spec", None)
        if spec is None:
            return None
        cached = getattr(self, "_ann_cache", None)
        if cached is None or cached[0] is not self.item_factors or cached[1] is not self.item_bias \
                or cached[2] != spec:
            built = FactorIndex.build(self.item_factors, self.item_bias, spec[0], **spec[1])
            cached = self._ann_cache = (self.item_factors, self.item_bias, spec, built)
        return cached[3]

    def _factor_items(self) -> FactorItems:
        """The item side prepared for :func:`factor_top_k`, rebuilt when the factors change."""
        cached = getattr(self, "_items_cache", None)
        if cached is None or cached[0] is not self.item_factors or cached[1] is not self.item_bias:
            qn = float(np.median(np.linalg.norm(self.user_factors, axis=1))) if len(self.user_factors) else 1.0
            cached = (self.item_factors, self.item_bias, FactorItems.build(self.item_factors, self.item_bias, qn))
            self._items_cache = cached
        return cached[2]

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        self.user_factors = np.array(self.user_factors)  # arrays loaded from a file may be read-only
        self.user_factors[user_idx] = 0.0

    def _state(self) -> dict[str, np.ndarray]:
        state = {"user_factors": self.user_factors, "item_factors": self.item_factors}
        if self.item_bias is not None:
            state["item_bias"] = self.item_bias
        return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}  # saving only reads them

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        f = self.config.factors  # type: ignore[attr-defined]
        self.user_factors = take(arrays, "user_factors", np.float32, (self.n_users, f))
        self.item_factors = take(arrays, "item_factors", np.float32, (self.n_items, f))
        self.item_bias = take(arrays, "item_bias", np.float32, (self.n_items,)) if self.saves_bias else None


@dataclass(frozen=True)
class IALSConfig(ModelConfig):
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    """Confidence of an observed pair (unobserved pairs have confidence 1)."""
    epochs: int = 15
    patience: int = 3
    eval_every: int = 1
    feedback: str = "binary"


class IALS(_Factorised):
    """Implicit ALS (Hu, Koren, Volinsky 2008) via the ``implicit`` library, one sweep per epoch."""

    name = "ials"
    config_class = IALSConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
            "regularization": trial.suggest_float("regularization", 1e-2, 300.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.5, 50.0, log=True),
        }

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.utils import check_random_state

        cfg: IALSConfig = self.config  # type: ignore[assignment]
        if cfg.factors < 1 or cfg.regularization < 0 or cfg.alpha <= 0:
            raise ConfigError("ials: factors >= 1, regularization >= 0 and alpha > 0 required")
        from threadpoolctl import threadpool_limits

        # Binary feedback is the ``seen`` matrix fit() already built: no second copy.
        X = self.seen if cfg.feedback == "binary" else _feedback(dataset, cfg.feedback)
        with threadpool_limits(1, "blas"):  # implicit warns when BLAS is multi-threaded
            als = self._als = self._make_als(AlternatingLeastSquares, cfg, options)
        # What implicit's fit() derives from the matrix, once (scaled, transposed) and its initial
        # factors drawn as fit() draws them: every sweep then calls the solver as fit()'s loop
        # does, so the factors equal one implicit fit with as many iterations.
        self._Cui = sp.csr_matrix(X, dtype=np.float32) * np.float32(als.alpha)
        self._Ciu = self._Cui.T.tocsr()
        rng = check_random_state(als.random_state)
        als.user_factors = rng.random((X.shape[0], als.factors), dtype=als.dtype) * 0.01
        als.item_factors = rng.random((X.shape[1], als.factors), dtype=als.dtype) * 0.01

    @staticmethod
    def _make_als(factory: Any, cfg: IALSConfig, options: TrainingOptions) -> Any:
        return factory(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=1,
            random_state=options.seed,
            num_threads=options.num_threads or 0,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from threadpoolctl import threadpool_limits

        als = self._als
        # Its solver parallelises over users itself; a multi-threaded BLAS underneath only contends.
        with threadpool_limits(1, "blas"):
            reg, threads = als.regularization, als.num_threads
            als.solver(self._Cui, als.user_factors, als.item_factors, reg, num_threads=threads)
            als.solver(self._Ciu, als.item_factors, als.user_factors, reg, num_threads=threads)
        self.user_factors = als.user_factors
        self.item_factors = als.item_factors
        return {}

    def finish_training(self) -> None:
        self._als = None
        self._Cui = self._Ciu = None


@dataclass(frozen=True)
class BPRConfig(ModelConfig):
    factors: int = 64
    lr: float = 0.01
    reg: float = 1e-4
    """L2 penalty on the embeddings used in each step."""
    batch_size: int = 8192
    epochs: int = 40
    patience: int = 5
    eval_every: int = 2
    sparse: bool = False
    """Lazy Adam (``torch.optim.SparseAdam``'s rule, on gathered rows): a step updates only
    its batch's rows and their moments, so it costs the batch's size, not (customers + products) x
    factors as dense Adam does (at 1M customers, 70M parameters every step). For large logs; not
    the dense optimiser's trajectory (dense Adam moves every row at every step by its momentum)."""


class _LazyAdam:
    """Adam on the rows a step touches (the rule of ``torch.optim.SparseAdam``, without its sparse
    tensors): their moments are updated and they move; the other rows and moments stay as they are.
    Bias correction uses the global step count, as dense Adam's."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, rows: list[torch.Tensor], grads: list[torch.Tensor | None]) -> None:
        """``grads[k]``: the gradient of ``params[k][rows[k]]`` (distinct rows)."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v, r, g in zip(self.params, self.m, self.v, rows, grads, strict=True):
            if g is None:
                continue
            m_r = m[r].mul_(b1).add_(g, alpha=1 - b1)
            v_r = v[r].mul_(b2).addcmul_(g, g, value=1 - b2)
            m[r], v[r] = m_r, v_r
            p[r] -= (self.lr / c1) * m_r / (v_r.sqrt() / c2**0.5 + self.eps)


class BPR(_Factorised):
    """BPR-MF (Rendle et al. 2009) in PyTorch: uniform negatives, Adam, one pass per epoch."""

    name = "bpr"
    config_class = BPRConfig
    saves_bias = True

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "factors": trial.suggest_categorical("factors", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 1e-3, 5e-2, log=True),
            "reg": trial.suggest_float("reg", 1e-5, 1e-1, log=True),
        }

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: BPRConfig = self.config  # type: ignore[assignment]
        if cfg.factors < 1 or cfg.lr <= 0 or cfg.reg < 0 or cfg.batch_size < 1:
            raise ConfigError("bpr: factors >= 1, lr > 0, reg >= 0, batch_size >= 1 required")
        self._gen = torch.Generator().manual_seed(options.seed)
        self._device = torch.device(options.device)
        X = dataset.matrix()
        self._pos_u = torch.from_numpy(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)).astype(np.int64))
        self._pos_i = torch.from_numpy(X.indices.astype(np.int64))
        # Sorted user*n_items+item keys let us reject sampled negatives that are positives.
        self._keys = (self._pos_u * X.shape[1] + self._pos_i).sort().values
        std = 0.1 / cfg.factors**0.5
        self._U = torch.nn.Embedding(X.shape[0], cfg.factors).to(self._device)
        self._V = torch.nn.Embedding(X.shape[1], cfg.factors).to(self._device)
        self._b = torch.nn.Embedding(X.shape[1], 1).to(self._device)
        for emb in (self._U, self._V):
            torch.nn.init.normal_(emb.weight, std=std, generator=self._gen)
        torch.nn.init.zeros_(self._b.weight)
        params = [*self._U.parameters(), *self._V.parameters(), *self._b.parameters()]
        self._opt = _LazyAdam(params, cfg.lr) if cfg.sparse else torch.optim.Adam(params, lr=cfg.lr)
        self._sync()

    def _sync(self) -> None:
        self.user_factors = self._U.weight.detach().cpu().numpy().copy()
        self.item_factors = self._V.weight.detach().cpu().numpy().copy()
        self.item_bias = self._b.weight.detach().cpu().numpy()[:, 0].copy()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg: BPRConfig = self.config  # type: ignore[assignment]
        n, m = len(self._pos_u), self.n_items
        perm = torch.randperm(n, generator=self._gen)
        neg = torch.randint(0, m, (n,), generator=self._gen)
        for _ in range(3):  # resample negatives that happen to be positives
            hit = torch.isin(self._pos_u[perm] * m + neg, self._keys)
            if not hit.any():
                break
            neg[hit] = torch.randint(0, m, (int(hit.sum()),), generator=self._gen)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            u = self._pos_u[idx].to(self._device)
            i = self._pos_i[idx].to(self._device)
            j = neg[s : s + cfg.batch_size].to(self._device)
            total += self._step(u, i, j) * len(idx)
        self._sync()
        return {"loss": total / n}

    def _step(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> float:
        """One optimiser step on a batch of (customer, bought, negative) triples; its loss."""
        cfg: BPRConfig = self.config  # type: ignore[assignment]
        assert self._U is not None and self._V is not None and self._b is not None
        if isinstance(self._opt, _LazyAdam):
            # Only the batch's distinct rows take part: gathered as leaves, their gradients dense.
            rows_u, at_u = torch.unique(u, return_inverse=True)
            rows_i, at_ij = torch.unique(torch.cat([i, j]), return_inverse=True)
            leaves = [w.detach()[r].requires_grad_() for w, r in
                      ((self._U.weight, rows_u), (self._V.weight, rows_i), (self._b.weight, rows_i))]
            eu, ei, ej = leaves[0][at_u], leaves[1][at_ij[: len(i)]], leaves[1][at_ij[len(i) :]]
            bi, bj = leaves[2][at_ij[: len(i)], 0], leaves[2][at_ij[len(i) :], 0]
        else:
            eu, ei, ej, bi, bj = self._U(u), self._V(i), self._V(j), self._b(i)[:, 0], self._b(j)[:, 0]
        x = (eu * (ei - ej)).sum(1) + bi - bj
        loss = -torch.nn.functional.logsigmoid(x).mean()
        loss = loss + cfg.reg * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / len(u)
        if isinstance(self._opt, _LazyAdam):
            loss.backward()
            self._opt.step([rows_u, rows_i, rows_i], [leaf.grad for leaf in leaves])
        else:
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
        return float(loss.detach())

    def finish_training(self) -> None:
        self._opt = None
        self._U = self._V = self._b = None
