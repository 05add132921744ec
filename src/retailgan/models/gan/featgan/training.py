"""featgan's training: next-purchase (or held-out) examples from ordered histories, the losses, one epoch.

Training targets come from the temporal order of the training pairs only: for each pair
``(u, j)`` the history is the customer's products first bought strictly before ``j`` (products of
the same basket are never each other's history); pairs with fewer than ``min_history`` earlier
products are not targets. With ``targets="held-out"`` every pair is a target and its history is
all the customer's other products (what a random hold-out, the ``cold-items`` protocol, asks to
recover; on MovieLens-100K the time order is that of rating entry and the next rating is
little more than noise). ``cold_dropout`` replaces, each epoch, the collaborative block of that
share of the products by its text-imputed value, so the tower learns to place new products.

Per mini-batch the generator minimises ``aux_weight * aux + adv_weight * adversarial``: the
auxiliary loss is the softmax cross-entropy of the true next product among the catalogue (all
products, or ``max_negatives`` sampled ones) with logits ``<G(h, z), e_i> / temperature`` (plus
the learned trend term with ``trend_days``); the discriminator (hinge or BCE loss, ``d_steps``
updates per batch, learning rate ``lr_d``) tells the product bought next from the generated
vector. ``ema`` keeps a bias-corrected moving average of the networks' weights, which is what
validates, scores and is saved.

Data-parallel (:mod:`retailgan.distributed`): every process holds the networks, wrapped in
DistributedDataParallel, and takes its share of each global mini-batch (the order of the
examples and the cold-dropout choice are the same on every process; sampled negatives and noise
are each process's own). One process trains exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from retailgan import distributed
from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError
from retailgan.features.space import FeatureSpace
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.featgan.networks import Nets, discriminator, init_linear

TREND_TABLE_MAX = 1 << 26  # days x products entries of the dense recent-sales table (256 MiB)
PREFIX_MAX = 1 << 27
"""Entries (training pairs x feature width) of float64 history prefix sums held at once (1 GiB).
A log whose pairs fit keeps one prefix for the whole training; a larger one streams: every epoch
deals the customers, shuffled, into blocks of at most this many entries and builds one block's
prefix at a time (examples shuffled within the block), so memory stays bounded at any log size."""


def ordered_histories(dataset: InteractionDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user product lists in time order: ``(indptr, items, timestamps)`` (ties by item index)."""
    order = np.lexsort((dataset.item_idx, dataset.timestamp, dataset.user_idx))
    counts = np.bincount(dataset.user_idx, minlength=dataset.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, dataset.item_idx[order].astype(np.int64), dataset.timestamp[order].astype(np.int64)


def history_input(prefix: np.ndarray, start: np.ndarray, cut: np.ndarray, recent: int) -> torch.Tensor:
    """Encoder input of histories ``items[start : start + cut]`` from the prefix sums of their
    product features (no loops): the whole history's mean, the mean of its last ``recent``
    products, and ``log(1 + length)``."""
    end = start + cut
    mean_all = (prefix[end] - prefix[start]) / np.maximum(cut, 1)[:, None]
    r0 = np.maximum(end - recent, start)
    mean_recent = (prefix[end] - prefix[r0]) / np.maximum(end - r0, 1)[:, None]
    size = np.log1p(cut)[:, None]
    return torch.from_numpy(np.concatenate([mean_all, mean_recent, size], axis=1).astype(np.float32))


def held_out_input(
    prefix: np.ndarray, start: np.ndarray, length: np.ndarray, pos: np.ndarray, recent: int
) -> torch.Tensor:
    """Encoder input of whole histories ``items[start : start + length]`` without the product at
    ``pos`` (the target): the same three parts as :func:`history_input`, the target removed from
    both means."""
    end = start + length
    x = prefix[pos + 1] - prefix[pos]
    mean_all = (prefix[end] - prefix[start] - x) / np.maximum(length - 1, 1)[:, None]
    # The last ``recent`` products other than the target: one further back when it is among them.
    inside = pos >= end - recent
    r0 = np.maximum(end - recent - inside, start)
    n_recent = (end - r0) - inside
    mean_recent = (prefix[end] - prefix[r0] - inside[:, None] * x) / np.maximum(n_recent, 1)[:, None]
    size = np.log1p(length - 1)[:, None]
    return torch.from_numpy(np.concatenate([mean_all, mean_recent, size], axis=1).astype(np.float32))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated integer ranges ``starts[j] : starts[j] + lengths[j]``."""
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


class TrainingMixin:
    """``FeatureGAN``'s ``init_training`` / ``train_epoch`` / ``finish_training`` (module docstring)."""

    nets: Nets | None = None
    space: FeatureSpace | None = None
    X: np.ndarray | None = None
    """(n_items, d_feat) product features."""

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self._cfg
        cfg.validate()
        self.clear_item_prior()
        device = torch.device("cpu")
        init_gen = torch.Generator().manual_seed(options.seed)
        # (order, draws): the same generator in one process, so one process draws what it always drew.
        self._order_gen, self._gen = distributed.generators(options.seed + 1, device)
        self._rng = np.random.default_rng(options.seed)  # cold dropout: the same on every process
        item_users = dataset.matrix().T.tocsr()
        info = dataset.item_info
        self.space = FeatureSpace(cfg.feature_config())
        self.X = self.space.fit(info.titles, info.categories, info.prices, item_users, seed=options.seed)
        # What each product with interactions would look like were it new (for cold_dropout).
        self._warm = np.flatnonzero(np.diff(item_users.indptr) > 0)
        imputed = self.space.impute_collab(self.space.collab_text, exclude_self=True)
        self._X_cold = self.X[self._warm].copy()
        self._X_cold[:, self.space.block_slices()["collab"]] = cfg.w_collab * imputed
        self._hist_indptr, self._hist_items, hist_ts = ordered_histories(dataset)
        self._build_examples(hist_ts)
        if cfg.trend_days:
            self._init_trend(dataset, hist_ts)

        self.nets = Nets(self.X.shape[1], cfg)
        init_linear(self.nets, init_gen)
        if cfg.trend_days:  # start as plain featgan: no weight on recent sales
            nn.init.zeros_(self.nets.trend.weight)
            self._cold_items = np.ones(len(self.X), bool)
            self._cold_items[self._warm] = False
        self._opt_g = torch.optim.Adam(
            self.nets.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999), weight_decay=cfg.weight_decay
        )
        self.D = None
        if cfg.adversarial:
            self.D = discriminator(cfg.hidden, cfg.emb_dim, init_gen)
            self._opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
        # Updates go through DDP wrappers under torch.distributed (gradients averaged across
        # processes); in one process these are the networks themselves.
        self._nets_train = distributed.wrap(self.nets, device)
        self._D_train = None if self.D is None else distributed.wrap(self.D, device)
        # Weight averaging (``ema``): the running average (from zero, bias-corrected when read, as
        # Adam's moments are, so the random initial weights do not linger in it), its number of
        # steps, and the raw weights while the average is loaded.
        self._ema_params = [torch.zeros_like(p) for p in self.nets.parameters()] if cfg.ema > 0 else None
        self._ema_steps = 0
        self._raw_params = None
        self._invalidate()

    def _build_examples(self, hist_ts: np.ndarray) -> None:
        """Targets ``(position in the ordered pairs, number of earlier products)`` and the
        per-user prefix sums of product features that give every history mean in O(1)."""
        cfg = self._cfg
        indptr = self._hist_indptr
        n_users = len(indptr) - 1
        user_of = np.repeat(np.arange(n_users), np.diff(indptr))
        # Earlier products: those of the same user with a strictly smaller time.
        new_group = np.ones(len(user_of), bool)
        new_group[1:] = (user_of[1:] != user_of[:-1]) | (hist_ts[1:] != hist_ts[:-1])
        first_same = np.maximum.accumulate(np.where(new_group, np.arange(len(user_of)), 0))
        cut = first_same - indptr[user_of]
        if cfg.targets == "held-out":  # every pair, its history all the customer's other products
            cut = np.diff(indptr)[user_of] - 1
        keep = cut >= cfg.min_history
        self._ex_pos = np.flatnonzero(keep).astype(np.int64)
        self._ex_cut = cut[keep].astype(np.int64)
        self._ex_start = indptr[user_of[keep]].astype(np.int64)
        # Examples are grouped by customer: customer u's are _ex_pos[ex_indptr[u] : ex_indptr[u + 1]].
        self._ex_indptr = np.concatenate([[0], np.cumsum(np.bincount(user_of[keep], minlength=n_users))])
        if len(self._ex_pos) == 0:
            raise ConfigError("featgan: no training pair has an earlier product of the same customer (min_history)")
        self._prefix = None
        if len(self._hist_items) * self.X.shape[1] <= PREFIX_MAX:
            self._prefix = self._prefix_of(self._hist_items)

    def _prefix_of(self, items: np.ndarray) -> np.ndarray:
        """``(len(items) + 1, d_feat)`` float64 prefix sums of the features of ``items``."""
        assert self.X is not None
        prefix = np.zeros((len(items) + 1, self.X.shape[1]))
        prefix[1:] = self.X[items]
        np.cumsum(prefix[1:], axis=0, out=prefix[1:])
        return prefix

    def _epoch_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        """One epoch's examples as ``(prefix, start, order)`` blocks: the prefix sums the block's
        history inputs are read from, every example's start in it (indexed by example), and the
        examples to visit (global indices, shuffled; at most ``epoch_examples`` in all)."""
        cfg = self._cfg
        n_ex = len(self._ex_pos)
        share = 1.0 if not cfg.epoch_examples else min(1.0, cfg.epoch_examples / n_ex)
        if self._prefix is not None:  # everything fits: one block, one shuffle of every example
            order = torch.randperm(n_ex, generator=self._order_gen)
            yield self._prefix, self._ex_start, order[: math.ceil(share * n_ex)]
            return
        assert self.X is not None
        indptr, ex_indptr = self._hist_indptr, self._ex_indptr
        users = torch.randperm(len(indptr) - 1, generator=self._order_gen).numpy()
        lengths = np.diff(indptr)[users]
        ends = np.cumsum(lengths)
        cap = max(PREFIX_MAX // self.X.shape[1], 1)
        bounds = np.unique(np.searchsorted(ends, np.arange(cap, ends[-1], cap), side="right"))
        local_start = np.zeros(n_ex, np.int64)  # read only at the current block's examples
        for block in np.split(users, bounds):
            if len(block) == 0:
                continue
            lens, ex_lens = np.diff(indptr)[block], np.diff(ex_indptr)[block]
            pairs = _ranges(indptr[block], lens)
            examples = _ranges(ex_indptr[block], ex_lens)
            if len(examples) == 0:
                continue
            # A customer's pairs start here in the block's concatenation.
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            local_start[examples] = np.repeat(starts, ex_lens)
            pick = torch.randperm(len(examples), generator=self._order_gen)
            pick = pick[: math.ceil(share * len(examples))]
            yield self._prefix_of(self._hist_items[pairs]), local_start, torch.from_numpy(examples)[pick]

    def _init_trend(self, dataset: InteractionDataset, hist_ts: np.ndarray) -> None:
        """Per-day sales (new buyers per product: a training pair is one customer's first time
        with one product); the day of every example; and the recent sales at the end of the
        training data. Cumulated over days (two row lookups per example) when days x products
        fits TREND_TABLE_MAX entries, else kept sparse (memory follows the pairs) and summed
        per batch."""
        day0 = int(dataset.timestamp.min()) // 86400
        days = dataset.timestamp.astype(np.int64) // 86400 - day0
        n_days = int(days.max()) + 1
        self._trend_daily = sp.csr_matrix(
            (np.ones(len(days), np.float32), (days, dataset.item_idx)), shape=(n_days, dataset.n_items)
        )
        self._trend_cum = None
        if (n_days + 1) * dataset.n_items <= TREND_TABLE_MAX:
            # cum[d]: sales on days before d (float32 sums of counts: exact below 2 ** 24).
            cum = np.zeros((n_days + 1, dataset.n_items), np.float32)
            np.cumsum(self._trend_daily.toarray(), axis=0, out=cum[1:])
            self._trend_cum = cum
        self._ex_day = hist_ts[self._ex_pos] // 86400 - day0
        self._recent = self._window_sales(np.array([n_days]))[0].astype(np.float64)

    def _window_sales(self, days: np.ndarray) -> np.ndarray:
        """``(len(days), n_items)`` sales in the ``trend_days`` days before each of ``days``."""
        w = self._cfg.trend_days
        if self._trend_cum is not None:
            return self._trend_cum[days] - self._trend_cum[np.maximum(days - w, 0)]
        out = np.empty((len(days), self._trend_daily.shape[1]), np.float32)
        for r, d in enumerate(days):
            out[r] = self._trend_daily[max(int(d) - w, 0) : int(d)].sum(axis=0).A1
        return out

    def _trend_logits(
        self, beta: torch.Tensor, rows: np.ndarray, cand: torch.Tensor | None, cold: np.ndarray
    ) -> torch.Tensor:
        """The trend term of the logits of examples ``rows`` (trend weights ``beta``) over the
        candidates: ``(beta + kappa_i beta_cold) log(1 + r_i(d))`` with ``r_i(d)`` the sales in
        the ``trend_days`` days before the example's day ``d``; ``cold``: ``kappa`` of the epoch."""
        days, which = np.unique(self._ex_day[rows], return_inverse=True)
        recent = self._window_sales(days).astype(np.float64)  # log in float64: the same bits either path
        log_r = torch.from_numpy(np.log1p(recent).astype(np.float32))[torch.from_numpy(which)]
        kappa = torch.from_numpy(cold.astype(np.float32))
        if cand is not None:
            log_r, kappa = log_r[:, cand], kappa[cand]
        return (beta[:, :1] + beta[:, 1:] * kappa[None, :]) * log_r

    def _noise(self, n: int) -> torch.Tensor | None:
        cfg = self._cfg
        if not cfg.noise_dim:
            return None
        return cfg.noise_scale * torch.randn(n, cfg.noise_dim, generator=self._gen)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self._cfg
        assert self.nets is not None and self.X is not None
        self._invalidate()
        if self._raw_params is not None:  # train on from the raw weights, not their average
            self._swap_in(self._raw_params)
            self._raw_params = None
        X_epoch = self.X.copy()
        cold_epoch = self._cold_items.copy() if cfg.trend_days else None
        if cfg.cold_dropout > 0 and len(self._warm):
            pick = self._rng.random(len(self._warm)) < cfg.cold_dropout
            X_epoch[self._warm[pick]] = self._X_cold[pick]
            if cold_epoch is not None:
                cold_epoch[self._warm[pick]] = True
        X_t = torch.from_numpy(X_epoch)
        n_items = len(X_epoch)
        targets_all = torch.from_numpy(self._hist_items[self._ex_pos])
        logged: dict[str, list[float]] = {"loss_aux": [], "loss_g_adv": [], "loss_d": []}
        world = distributed.world_size()
        self.nets.train()
        batches = (
            (prefix, start, batch)
            for prefix, start, order in self._epoch_blocks()
            for batch in order.split(cfg.batch_size)
        )
        for prefix, start, batch in batches:
            if len(batch) < world:  # a last batch too small to share: skipped by every process alike
                continue
            idx = distributed.shard(batch)
            i = idx.numpy()
            if cfg.targets == "held-out":
                # The target's place in this block's prefix sums (positions are global).
                at = start[i] + self._ex_pos[i] - self._ex_start[i]
                hist = held_out_input(prefix, start[i], self._ex_cut[i] + 1, at, cfg.recent)
            else:
                hist = history_input(prefix, start[i], self._ex_cut[i], cfg.recent)
            target = targets_all[idx]
            if n_items <= cfg.max_negatives:
                cand, labels, X_cand = None, target, X_t
            else:  # uniform negatives plus the batch's own targets
                neg = torch.randint(0, n_items, (cfg.max_negatives,), generator=self._gen)
                cand, labels = torch.unique(torch.cat([target, neg]), return_inverse=True)
                labels, X_cand = labels[: len(target)], X_t[cand]
            h, E, g, beta = self._nets_train(hist, X_cand, self._noise(len(hist)))
            # Learned trend-following: a per-customer weight on the candidates' recent sales.
            trend = self._trend_logits(beta, i, cand, cold_epoch) if beta is not None else 0.0
            loss = cfg.aux_weight * F.cross_entropy(g @ E.T / cfg.temperature + trend, labels)
            logged["loss_aux"].append(float(loss.detach()))
            if self.D is not None:
                loss = loss + cfg.adv_weight * self._adversarial_step(h, E[labels].detach(), g, logged)
            self._opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self._opt_g.step()
            if self._ema_params is not None:
                self._ema_steps += 1
                with torch.no_grad():
                    for avg, w in zip(self._ema_params, self.nets.parameters(), strict=True):
                        avg.lerp_(w.detach(), 1.0 - cfg.ema)
        if self._ema_params is not None and self._ema_steps:  # validation, checkpoints, scoring: the average
            self._raw_params = [w.detach().clone() for w in self.nets.parameters()]
            correction = 1.0 - cfg.ema**self._ema_steps
            self._swap_in([avg / correction for avg in self._ema_params])
        self.nets.eval()
        return {k: float(np.mean(v)) for k, v in logged.items() if v}

    def _adversarial_step(
        self, h: torch.Tensor, real: torch.Tensor, g: torch.Tensor, logged: dict[str, list[float]]
    ) -> torch.Tensor:
        """``d_steps`` discriminator updates on (history, product bought next) against (history,
        generated vector) pairs, then G's adversarial loss (D's weights frozen)."""
        cfg = self._cfg
        assert self.D is not None and self._D_train is not None
        hd = h.detach()
        self.D.requires_grad_(True)
        for _ in range(cfg.d_steps):
            d_real = self._D_train(torch.cat([hd, real], dim=1))
            d_fake = self._D_train(torch.cat([hd, g.detach()], dim=1))
            if cfg.loss == "hinge":
                loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:
                loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            self._opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._opt_d.step()
        logged["loss_d"].append(float(loss_d.detach()))
        # G's gradient flows through D's input only: the plain network, not its DDP wrapper.
        self.D.requires_grad_(False)
        d_gen = self.D(torch.cat([hd, g], dim=1))
        adv = (-d_gen if cfg.loss == "hinge" else F.softplus(-d_gen)).mean()
        logged["loss_g_adv"].append(float(adv.detach()))
        return adv

    def _swap_in(self, weights: list[torch.Tensor]) -> None:
        assert self.nets is not None
        with torch.no_grad():
            for w, new in zip(self.nets.parameters(), weights, strict=True):
                w.copy_(new)

    def finish_training(self) -> None:
        self._ema_params = self._raw_params = None
        self.D = self._D_train = self._nets_train = None
        self._opt_g = self._opt_d = None
        self._prefix = self._X_cold = None
        self._ex_pos = self._ex_cut = self._ex_start = self._ex_indptr = None
        self._trend_daily = self._trend_cum = self._ex_day = None
        self._gen = self._order_gen = self._rng = None
        self._invalidate()
