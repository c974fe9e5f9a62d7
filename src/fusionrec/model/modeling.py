"""The fusion model, in one file.

Items: each modality's frozen pretrained embedding is projected into a shared space; the projections
are fused by gated attention (a learned weight per modality per item, over the modalities the item
has) or concatenated (the classic design, kept as a baseline); an item-ID embedding is added for items
seen in training. Modality dropout and ID dropout in training keep the item tower sound when a
modality is missing and for cold items that have no ID embedding.

Users: an ID embedding plus attention over the items of the user's history.

Retrieval: dot products of unit vectors over the whole catalogue (scaled by a temperature), trained
with a full softmax over the items seen in training, or, on a large catalogue, a sampled softmax with
the logQ correction (in-batch positives and uniformly drawn items as negatives). An optional ranking
head scores (user, item) pairs and is trained with log loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fusionrec.model.config import FusionConfig

DENSE_ITEM_ITEM = 1 << 24  # the item-item term may build a dense n x n matrix up to this size (4,096 items)
# The content term keeps the catalogue's content vectors (n_items x the encoders' summed width); above this
# many values it keeps a seeded random projection of them to CONTENT_DIM (cosines kept to about +-0.05)
CONTENT_VALUES = 1 << 27
CONTENT_DIM = 512


def _neighbour_sum(
    h: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, value: torch.Tensor, n: int
) -> torch.Tensor:
    """[B, n]: the sum over each row's history ``h`` (where ``mask``) of the history item's sparse row
    (``index``, ``value``: [n, k], its neighbours and their weights)."""
    B, k = h.shape[0], index.shape[1]
    out = torch.zeros(B, n, device=h.device)
    step = max(1, (1 << 24) // max(1, B * k))  # [B, step, k] gathers of at most 16M values at a time
    for s in range(0, h.shape[1], step):
        hs = h[:, s : s + step]
        values = value[hs] * mask[:, s : s + step].unsqueeze(-1)  # [B, step, k]
        out.scatter_add_(1, index[hs].flatten(1), values.flatten(1))
    return out


@dataclass
class ItemOutput:
    """The item tower's output for a set of items."""

    vectors: torch.Tensor  # [n, dim], unit length
    modality_weights: torch.Tensor  # [n, n_modalities]: the share each modality contributed
    bias: torch.Tensor | None = None  # [n] score bias (config.item_bias), else None


@dataclass
class ItemParts:
    """Each item's vector before normalisation and its score bias, split by source, so that a score can be
    explained term by term. Sources: one per modality (the model's order), then the ID, then a constant.

    ``parts.sum(1)`` is the item's vector before normalisation and ``bias.sum(1)`` its score bias, so
    ``explain`` splits a retrieval score into terms that add up to it exactly.
    """

    parts: torch.Tensor  # [n, M + 2, d]
    bias: torch.Tensor  # [n, M + 2] (zeros without item_bias)
    weights: torch.Tensor  # [n, max(1, M)]: the fusion's weight of each modality


def explain(users: torch.Tensor, parts: torch.Tensor, bias: torch.Tensor, temperature: float) -> torch.Tensor:
    """Score terms [B, k, M + 2] of users [B, d] for their items' ``parts`` [B, k, M + 2, d] and ``bias`` [B, k, M + 2].

    The score ``u . v / (T |v|) + b`` with ``v = sum_s parts_s`` and ``b = sum_s bias_s`` is linear in the
    parts once the norm is fixed, so term ``s`` is ``u . parts_s / (T |v|) + bias_s`` and the terms add up
    to the score.
    """
    norm = parts.sum(2).norm(dim=-1).clamp(min=1e-12)  # F.normalize's epsilon
    return torch.einsum("bd,bksd->bks", users, parts) / (temperature * norm.unsqueeze(-1)) + bias


class GatedFusion(nn.Module):
    """Attention over modalities: weight_m = softmax_m(w . tanh(W h_m)) over the modalities present."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-modality parts [n, M, d] (their sum is the fused vector), no constant, and the weights [n, M]."""
        logits = self.score(torch.tanh(self.proj(h))).squeeze(-1)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # an item with no modality at all: all zero
        return weights.unsqueeze(-1) * h, None, weights


class ConcatFusion(nn.Module):
    """Concatenate the projections (zeros for a missing modality) and mix them with a linear layer."""

    def __init__(self, dim: int, n_modalities: int) -> None:
        super().__init__()
        self.mix = nn.Linear(dim * n_modalities, dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-modality parts W_m h_m [n, M, d], the mixing layer's bias [d], and equal weights over those present."""
        h = h * mask.unsqueeze(-1)
        present = mask.float()
        weights = present / present.sum(-1, keepdim=True).clamp(min=1.0)
        n_mod, d = h.shape[1], h.shape[2]
        parts = torch.einsum("nmd,emd->nme", h, self.mix.weight.view(-1, n_mod, d))
        return parts, self.mix.bias, weights


class FusionRecModel(nn.Module):
    """Two towers over frozen modality embeddings; see the module docstring."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.modality_names = sorted(config.modalities)
        self.projections = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(config.modalities[m], d),
                    nn.GELU(),
                    nn.Dropout(config.dropout),
                    nn.Linear(d, d),
                    nn.LayerNorm(d),
                )
                for m in self.modality_names
            }
        )
        if self.modality_names:
            self.fusion = GatedFusion(d) if config.fusion == "gated" else ConcatFusion(d, len(self.modality_names))
        self.item_id = nn.Embedding(config.n_items, d) if config.use_item_id else None
        self.user_id = nn.Embedding(config.n_users, d) if config.use_user_id else None
        self.history_query = nn.Parameter(torch.zeros(d))
        self.history_key = nn.Linear(d, d, bias=False)
        self.user_mix = nn.Linear(2 * d, d)
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=0.05)
        if self.user_id is not None:
            nn.init.normal_(self.user_id.weight, std=0.05)
        if config.item_bias:
            self.content_bias = nn.Linear(d, 1)
            self.id_bias = nn.Embedding(config.n_items, 1)
            nn.init.zeros_(self.content_bias.weight)
            nn.init.zeros_(self.content_bias.bias)
            nn.init.zeros_(self.id_bias.weight)
        self.rank_head = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1)) if config.ranking_head else None
        # Set from the data: which items have an ID embedding worth using (seen in training) and the
        # frozen modality features. Buffers, so that they travel with the weights.
        self.register_buffer("item_seen", torch.zeros(config.n_items, dtype=torch.bool))
        k = config.item_item_neighbours  # the item-item term, fitted after training (fusionrec.itemitem)
        self.register_buffer("ii_index", torch.zeros(config.n_items, k, dtype=torch.long))
        self.register_buffer("ii_value", torch.zeros(config.n_items, k))
        self.register_buffer("ii_weight", torch.zeros(()))
        self.register_buffer("cc_weight", torch.zeros(()))  # the content term's weight (fit_content_term)
        kc = config.content_neighbour_count  # and its neighbourhood (fit_content_term)
        self.register_buffer("cn_index", torch.zeros(config.n_items, kc, dtype=torch.long))
        self.register_buffer("cn_value", torch.zeros(config.n_items, kc))
        self.register_buffer("cn_weight", torch.zeros(()))
        # and its taste clusters (fit_taste_term): each item's cluster of the content tower, their count, the weight
        self.register_buffer("tc_label", torch.zeros(config.n_items, dtype=torch.long))
        self.register_buffer("tc_clusters", torch.zeros((), dtype=torch.long))
        self.register_buffer("tc_weight", torch.zeros(()))
        self._content: torch.Tensor | None = None  # the content vectors, made from the features when first used
        self._dense_ii: tuple | None = None  # (the sparse rows' identity, the dense item-item matrix) once used
        for m in self.modality_names:
            self.register_buffer(f"feat_{m}", torch.zeros(config.n_items, config.modalities[m]))
            self.register_buffer(f"mask_{m}", torch.zeros(config.n_items, dtype=torch.bool))

    # -- data ----------------------------------------------------------------------------------

    def set_item_features(self, features: dict[str, tuple[torch.Tensor, torch.Tensor]], seen: torch.Tensor) -> None:
        """Install the frozen item embeddings (values, mask) per modality and the seen-in-training mask."""
        for m in self.modality_names:
            values, mask = features[m]
            getattr(self, f"feat_{m}").copy_(values)
            getattr(self, f"mask_{m}").copy_(mask)
        self.item_seen.copy_(seen)
        self._content = None

    # -- towers --------------------------------------------------------------------------------

    def item_parts(
        self, idx: torch.Tensor | None = None, *, content: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> ItemParts:
        """The items' vectors and biases split by source (see :class:`ItemParts`); arguments as :meth:`items`."""
        cfg = self.config
        device = self.history_query.device
        if content is not None:
            n = next(iter(content.values()))[0].shape[0]
            feats = {
                m: content[m]
                if m in content
                else (torch.zeros(n, cfg.modalities[m], device=device), torch.zeros(n, dtype=torch.bool, device=device))
                for m in self.modality_names
            }
            seen = torch.zeros(n, dtype=torch.bool, device=device)
            ids = None
        else:
            if idx is None:
                idx = torch.arange(cfg.n_items, device=self.item_seen.device)
            feats = {m: (getattr(self, f"feat_{m}")[idx], getattr(self, f"mask_{m}")[idx]) for m in self.modality_names}
            seen = self.item_seen[idx]
            ids = idx
        n, d, n_mod = seen.shape[0], cfg.dim, len(self.modality_names)
        zero = torch.zeros(n, d, device=seen.device)
        weights = torch.zeros(n, max(1, n_mod), device=seen.device)
        modal, const = [], zero
        if self.modality_names:
            h = torch.stack([self.projections[m](feats[m][0]) for m in self.modality_names], dim=1)
            mask = torch.stack([feats[m][1] for m in self.modality_names], dim=1)
            if self.training and cfg.modality_dropout > 0:
                mask = mask & (torch.rand(mask.shape, device=mask.device) >= cfg.modality_dropout)
            fused, constant, weights = self.fusion(h, mask)
            modal = list(fused.unbind(1))
            if constant is not None:
                const = constant.expand(n, d)
        use_id = seen if ids is not None and (self.item_id is not None or cfg.item_bias) else None
        if use_id is not None and self.training and cfg.id_dropout > 0 and self.modality_names:
            use_id = use_id & (torch.rand(n, device=seen.device) >= cfg.id_dropout)
        id_part = self.item_id(ids) * use_id.unsqueeze(-1) if self.item_id is not None and use_id is not None else zero
        if cfg.item_bias:  # a linear function of the content vector splits over its parts; the ID bias is the ID's
            content_bias = [self.content_bias.weight.squeeze(0) @ p.T for p in modal]
            id_bias = self.id_bias(ids).squeeze(-1) * use_id if use_id is not None else zero[:, 0]
            const_bias = const @ self.content_bias.weight.squeeze(0) + self.content_bias.bias
            bias = torch.stack([*content_bias, id_bias, const_bias], dim=1)
        else:
            bias = torch.zeros(n, n_mod + 2, device=seen.device)
        return ItemParts(torch.stack([*modal, id_part, const], dim=1), bias, weights)

    def items(
        self, idx: torch.Tensor | None = None, *, content: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> ItemOutput:
        """Item vectors for catalogue items ``idx`` (default all), or for new content given as tensors.

        ``content``: modality -> (values [n, d_m], mask [n]) for items outside the catalogue (query by
        example); such items have no ID embedding.
        """
        p = self.item_parts(idx, content=content)
        return ItemOutput(
            F.normalize(p.parts.sum(1), dim=-1), p.weights, p.bias.sum(1) if self.config.item_bias else None
        )

    def users(
        self,
        user_idx: torch.Tensor | None,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        item_vectors: torch.Tensor,
    ) -> torch.Tensor:
        """User vectors from the ID (None: cold users) and attention over their history.

        Args:
            user_idx: [B] user indices (-1 for a user without an ID embedding), or None when none has one.
            history: [B, H] item indices, right-aligned (the latest last; any value where masked): the tower
                attends to the last ``history_length`` columns, the item-item term sums over the last
                ``item_item_history``.
            history_mask: [B, H] bool, True where a history entry is real.
            item_vectors: [n_items, d] the catalogue's item vectors (from :meth:`items`).
        """
        d = self.config.dim
        B = history.shape[0]
        L = self.config.history_length  # a longer window (kept for the item-item term) ends with the tower's
        start = max(0, history.shape[1] - L)
        h, history_mask = history[:, start:].clamp(min=0), history_mask[:, start:]
        if self.user_id is not None and user_idx is not None:  # index -1: a user without an ID embedding (cold)
            uid = self.user_id(user_idx.clamp(min=0)) * (user_idx >= 0).unsqueeze(-1)
        else:
            uid = torch.zeros(B, d, device=item_vectors.device)
        query = uid + self.history_query
        if h.shape[1] == 0:  # history_length 0: the ID alone
            return F.normalize(self.user_mix(torch.cat([uid, torch.zeros_like(uid)], dim=-1)), dim=-1)
        # attention = softmax over the history of key(item) . query: in a training step each item's key is
        # computed once (not once per history entry), and the pooling is a weighted bag of item vectors,
        # with no [B, H, d] product tensor (at 10^6 interactions those and their backward were most of a
        # step); where the batch's histories are fewer than the catalogue (serving: one request's), the keys
        # of those items only (at 10^6 items the whole catalogue's keys were most of a request)
        if B * h.shape[1] < item_vectors.shape[0]:
            keys = self.history_key(item_vectors[h])
        else:
            keys = self.history_key(item_vectors)[h]
        att = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1) / d**0.5
        att = att.masked_fill(~history_mask, float("-inf"))
        w = torch.nan_to_num(torch.softmax(att, dim=-1), nan=0.0)
        pooled = F.embedding_bag(h, item_vectors, per_sample_weights=w.to(item_vectors.dtype), mode="sum")
        return F.normalize(self.user_mix(torch.cat([uid, pooled], dim=-1)), dim=-1)

    @property
    def has_item_item(self) -> bool:
        return self.ii_index.shape[1] > 0

    def item_item(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """The item-item term [B, n_items]: ``ii_weight * sum_h B[h, :]`` over each user's history (zeros
        without the term). ``B`` is kept sparse: each history item's strongest neighbours."""
        B, n = history.shape[0], self.config.n_items
        start = max(0, history.shape[1] - self.config.item_item_history)
        used = torch.nonzero(history_mask[:, start:].any(0)).flatten()  # columns padding for every row are skipped
        if not self.has_item_item or len(used) == 0:
            return torch.zeros(B, n, device=history.device)
        start += int(used[0])
        h, history_mask = history[:, start:].clamp(min=0), history_mask[:, start:]
        if n * n <= DENSE_ITEM_ITEM:
            # a small catalogue: the dense matrix, made once (at most 64 MiB), its rows summed over the history
            # (one bag per user) or, for many long histories, history counts times it (one matrix product);
            # either costs a fraction of gathering every history item's neighbours (benchmarks/item_item.py)
            dense = self._dense_item_item()
            if B * h.shape[1] < n:
                out = F.embedding_bag(h, dense, per_sample_weights=history_mask.to(dense.dtype), mode="sum")
            else:
                out = torch.zeros(B, n, device=h.device).scatter_add_(1, h, history_mask.to(dense.dtype)) @ dense
        else:
            out = _neighbour_sum(h, history_mask, self.ii_index, self.ii_value, n)
        return out * self.ii_weight

    def _dense_item_item(self) -> torch.Tensor:
        """The item-item matrix [n, n] from its sparse rows, kept until the rows change (in place or not)."""
        key = (self.ii_index.data_ptr(), self.ii_index._version, self.ii_value.data_ptr(), self.ii_value._version)
        if self._dense_ii is None or self._dense_ii[0] != key:
            n = self.config.n_items
            dense = torch.zeros(n, n, device=self.ii_value.device).scatter_(1, self.ii_index, self.ii_value)
            self._dense_ii = (key, dense)
        return self._dense_ii[1]

    @property
    def has_content_term(self) -> bool:
        weights = float(self.cc_weight) != 0.0 or float(self.cn_weight) != 0.0 or self.has_taste_term
        return bool(self.config.content_term and self.modality_names and weights)

    def history_window(self, history: torch.Tensor, history_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``item_item_history`` columns of the histories, padding clamped to a valid index, and their
        mask: what the content and taste terms sum over."""
        start = max(0, history.shape[1] - self.config.item_item_history)
        return history[:, start:].clamp(min=0), history_mask[:, start:]

    @property
    def has_taste_term(self) -> bool:
        return bool(self.modality_names and int(self.tc_clusters) > 0 and float(self.tc_weight) != 0.0)

    def taste_shares(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """[B, K]: ``log((n_c + 1) / (n + K)) + log K`` for each of the ``K`` taste clusters ``c``, ``n_c`` the
        user's last ``item_item_history`` items in it and ``n`` their count: the log of the history's smoothed
        share of the cluster against an even share (0 everywhere for an empty history)."""
        K = int(self.tc_clusters)
        h, m = self.history_window(history, history_mask)
        m = m.float()
        counts = torch.zeros(history.shape[0], K, device=history.device).scatter_add_(1, self.tc_label[h], m)
        return torch.log((counts + 1.0) / (m.sum(1, keepdim=True) + K)) + math.log(K)

    def taste_term(
        self, history: torch.Tensor, history_mask: torch.Tensor, weight: float | None = None
    ) -> torch.Tensor:
        """The taste term [B, n_items]: ``weight`` (default ``tc_weight``) times :meth:`taste_shares` at each
        item's cluster (``tc_label``)."""
        w = float(self.tc_weight) if weight is None else weight
        if int(self.tc_clusters) == 0 or w == 0.0:
            return torch.zeros(history.shape[0], self.config.n_items, device=history.device)
        return self.taste_shares(history, history_mask)[:, self.tc_label] * w

    def content_vectors(self) -> torch.Tensor:
        """The catalogue's content vectors [n_items, D], unit rows (zeros for an item with no content): each
        modality's features unit-normalised (zeros where masked), concatenated, normalised again."""
        device = self.cc_weight.device
        if self._content is None or self._content.device != device:
            parts = [
                F.normalize(getattr(self, f"feat_{m}").float(), dim=-1) * getattr(self, f"mask_{m}").unsqueeze(-1)
                for m in self.modality_names
            ]
            c = torch.cat(parts, dim=1) if parts else torch.zeros(self.config.n_items, 0, device=device)
            if c.numel() > CONTENT_VALUES and c.shape[1] > CONTENT_DIM:
                g = torch.Generator().manual_seed(0)
                c = c @ (torch.randn(c.shape[1], CONTENT_DIM, generator=g) / CONTENT_DIM**0.5).to(device)
            self._content = F.normalize(c, dim=-1)
        return self._content

    def content_term(
        self,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        weight: float | None = None,
        neighbour_weight: float | None = None,
        taste_weight: float | None = None,
    ):
        """The content term [B, n_items] over each user's last ``item_item_history`` items: ``weight``
        (default ``cc_weight``) times the cosine between the mean of their content vectors and each item's,
        plus ``neighbour_weight`` (default ``cn_weight``) times the sum over them of their content
        neighbourhood (``cn_value``: cos^p to each of an item's nearest items by content), plus the taste
        term at ``taste_weight`` (default ``tc_weight``; :meth:`taste_term`)."""
        w = float(self.cc_weight) if weight is None else weight
        wn = float(self.cn_weight) if neighbour_weight is None else neighbour_weight
        wt = float(self.tc_weight) if taste_weight is None else taste_weight
        B, n = history.shape[0], self.config.n_items
        out = torch.zeros(B, n, device=history.device)
        if not self.modality_names:
            return out
        h, m = self.history_window(history, history_mask)
        if w != 0.0:
            c = self.content_vectors()
            pooled = F.embedding_bag(h, c, per_sample_weights=m.to(c.dtype), mode="sum")
            out += F.normalize(pooled, dim=-1) @ c.T * w
        if wn != 0.0 and self.cn_index.shape[1] > 0:
            out += _neighbour_sum(h, m, self.cn_index, self.cn_value, n) * wn
        if wt != 0.0:
            out += self.taste_term(history, history_mask, weight=wt)
        return out

    def logits(self, users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval scores [B, n]: dot products of unit vectors scaled by the temperature, plus the item bias."""
        scores = users @ items.T / self.config.temperature
        return scores if bias is None else scores + bias

    def forward(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        history: torch.Tensor,
        history_mask: torch.Tensor,
        rank_negatives: int = 1,
        sampled: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The training loss for a batch of (user, positive item) pairs.

        Retrieval: a full softmax over the items seen in training, or, with ``sampled = (candidates,
        log_q)``, a sampled softmax over ``candidates`` (sorted, unique, holding every positive of the
        batch) whose logits are corrected by ``log_q``, the log of each candidate's expected count in the
        sample (the logQ correction: without it popular items, drawn more often as negatives, are pushed
        down too far). Only the items the batch needs (candidates and histories) go through the item
        tower then. Plus, with a ranking head, the log loss L = -sum(y log p + (1 - y) log(1 - p)) over
        the positives and sampled negatives.
        """
        if sampled is None:
            items = self.items()
            vectors, bias = items.vectors, items.bias
            users = self.users(user_idx, history, history_mask, vectors)
            logits = self.logits(users, vectors, bias)
            # items never seen in training (a cold-item split's test items) are no one's negatives: as eternal
            # negatives the model would learn to bury the content that looks like them (popular cold items most)
            if self.item_seen.any():
                logits = logits.masked_fill(~self.item_seen, float("-inf"))
            loss = F.cross_entropy(logits, item_idx)
            pos, rank_pool = item_idx, None
        else:
            candidates, log_q = sampled
            rank_pool = torch.randint(
                0,
                self.config.n_items,
                (len(item_idx) * rank_negatives if self.rank_head else 0,),
                device=item_idx.device,
            )
            need, where = torch.unique(
                torch.cat([candidates, history.clamp(min=0).flatten(), rank_pool]), return_inverse=True
            )
            items = self.items(need)
            vectors, bias = items.vectors, items.bias
            n_c, n_h = len(candidates), history.numel()
            users = self.users(user_idx, where[n_c : n_c + n_h].view_as(history), history_mask, vectors)
            cand = where[:n_c]
            logits = self.logits(users, vectors[cand], None if bias is None else bias[cand]) - log_q
            loss = F.cross_entropy(logits, torch.searchsorted(candidates, item_idx))
            pos = cand[torch.searchsorted(candidates, item_idx)]
            rank_pool = where[n_c + n_h :]
        if self.rank_head is not None:
            neg = (
                torch.randint(0, self.config.n_items, (len(item_idx) * rank_negatives,), device=item_idx.device)
                if rank_pool is None
                else rank_pool
            )
            pos_logit = self.rank(users, vectors[pos])
            neg_logit = self.rank(users.repeat_interleave(rank_negatives, 0), vectors[neg])
            logits = torch.cat([pos_logit, neg_logit])
            labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
            loss = loss + F.binary_cross_entropy_with_logits(logits, labels)
        return loss

    def rank(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ranking-head logits for aligned (user, item) pairs [B]."""
        if self.rank_head is None:
            raise RuntimeError("this model was built without a ranking head (ranking_head: false)")
        return self.rank_head(torch.cat([users, items, users * items], dim=-1)).squeeze(-1)
