"""The fusion model, in one file.

Items: each modality's frozen pretrained embedding is projected into a shared space; the projections
are fused by gated attention (a learned weight per modality per item, over the modalities the item
has) or concatenated (the classic design, kept as a baseline); an item-ID embedding is added for items
seen in training. Modality dropout and ID dropout in training keep the item tower sound when a
modality is missing and for cold items that have no ID embedding.

Users: an ID embedding plus attention over the items of the user's history.

Retrieval: dot products of unit vectors over the whole catalogue (scaled by a temperature), trained
with a full softmax. An optional ranking head scores (user, item) pairs and is trained with log loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fusionrec.model.config import FusionConfig


@dataclass
class ItemOutput:
    """The item tower's output for a set of items."""

    vectors: torch.Tensor  # [n, dim], unit length
    modality_weights: torch.Tensor  # [n, n_modalities]: the share each modality contributed
    bias: torch.Tensor | None = None  # [n] score bias (config.item_bias), else None


class GatedFusion(nn.Module):
    """Attention over modalities: weight_m = softmax_m(w . tanh(W h_m)) over the modalities present."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # h [n, M, d], mask [n, M] bool
        logits = self.score(torch.tanh(self.proj(h))).squeeze(-1)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # an item with no modality at all: all zero
        return (weights.unsqueeze(-1) * h).sum(1), weights


class ConcatFusion(nn.Module):
    """Concatenate the projections (zeros for a missing modality) and mix them with a linear layer."""

    def __init__(self, dim: int, n_modalities: int) -> None:
        super().__init__()
        self.mix = nn.Linear(dim * n_modalities, dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h * mask.unsqueeze(-1)
        present = mask.float()
        weights = present / present.sum(-1, keepdim=True).clamp(min=1.0)
        return self.mix(h.flatten(1)), weights


class FusionRecModel(nn.Module):
    """Two towers over frozen modality embeddings; see the module docstring."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.modality_names = sorted(config.modalities)
        self.projections = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(config.modalities[m], d), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(d, d),
                             nn.LayerNorm(d))
            for m in self.modality_names
        })
        if self.modality_names:
            self.fusion = (GatedFusion(d) if config.fusion == "gated" else ConcatFusion(d, len(self.modality_names)))
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
        self.rank_head = (nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1)) if config.ranking_head else None)
        # Set from the data: which items have an ID embedding worth using (seen in training) and the
        # frozen modality features. Buffers, so that they travel with the weights.
        self.register_buffer("item_seen", torch.zeros(config.n_items, dtype=torch.bool))
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

    # -- towers --------------------------------------------------------------------------------

    def items(self, idx: torch.Tensor | None = None, *, content: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
              ) -> ItemOutput:
        """Item vectors for catalogue items ``idx`` (default all), or for new content given as tensors.

        ``content``: modality -> (values [n, d_m], mask [n]) for items outside the catalogue (query by
        example); such items have no ID embedding.
        """
        cfg = self.config
        if content is not None:
            n = next(iter(content.values()))[0].shape[0]
            feats = {m: content[m] if m in content else (torch.zeros(n, cfg.modalities[m], device=self.history_query.device),
                                                          torch.zeros(n, dtype=torch.bool, device=self.history_query.device))
                     for m in self.modality_names}
            seen = torch.zeros(n, dtype=torch.bool, device=self.history_query.device)
            ids = None
        else:
            if idx is None:
                idx = torch.arange(cfg.n_items, device=self.item_seen.device)
            feats = {m: (getattr(self, f"feat_{m}")[idx], getattr(self, f"mask_{m}")[idx]) for m in self.modality_names}
            seen = self.item_seen[idx]
            ids = idx
        n = seen.shape[0]
        vec = torch.zeros(n, cfg.dim, device=seen.device)
        weights = torch.zeros(n, max(1, len(self.modality_names)), device=seen.device)
        if self.modality_names:
            h = torch.stack([self.projections[m](feats[m][0]) for m in self.modality_names], dim=1)
            mask = torch.stack([feats[m][1] for m in self.modality_names], dim=1)
            if self.training and cfg.modality_dropout > 0:
                mask = mask & (torch.rand(mask.shape, device=mask.device) >= cfg.modality_dropout)
            vec, weights = self.fusion(h, mask)
        use_id = seen if ids is not None and (self.item_id is not None or cfg.item_bias) else None
        if use_id is not None and self.training and cfg.id_dropout > 0 and self.modality_names:
            use_id = use_id & (torch.rand(n, device=seen.device) >= cfg.id_dropout)
        bias = None
        if cfg.item_bias:
            bias = self.content_bias(vec).squeeze(-1)
            if use_id is not None:
                bias = bias + self.id_bias(ids).squeeze(-1) * use_id
        if self.item_id is not None and use_id is not None:
            vec = vec + self.item_id(ids) * use_id.unsqueeze(-1)
        return ItemOutput(F.normalize(vec, dim=-1), weights, bias)

    def users(self, user_idx: torch.Tensor | None, history: torch.Tensor, history_mask: torch.Tensor,
              item_vectors: torch.Tensor) -> torch.Tensor:
        """User vectors from the ID (None: cold users) and attention over their history.

        Args:
            user_idx: [B] user indices (-1 for a user without an ID embedding), or None when none has one.
            history: [B, H] item indices (any value where masked).
            history_mask: [B, H] bool, True where a history entry is real.
            item_vectors: [n_items, d] the catalogue's item vectors (from :meth:`items`).
        """
        d = self.config.dim
        B = history.shape[0]
        hv = item_vectors[history.clamp(min=0)]  # [B, H, d]
        if self.user_id is not None and user_idx is not None:  # index -1: a user without an ID embedding (cold)
            uid = self.user_id(user_idx.clamp(min=0)) * (user_idx >= 0).unsqueeze(-1)
        else:
            uid = torch.zeros(B, d, device=hv.device)
        query = uid + self.history_query
        att = (self.history_key(hv) * query.unsqueeze(1)).sum(-1) / d ** 0.5
        att = att.masked_fill(~history_mask, float("-inf"))
        w = torch.nan_to_num(torch.softmax(att, dim=-1), nan=0.0)
        pooled = (w.unsqueeze(-1) * hv).sum(1)
        return F.normalize(self.user_mix(torch.cat([uid, pooled], dim=-1)), dim=-1)

    def logits(self, users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval scores [B, n]: dot products of unit vectors scaled by the temperature, plus the item bias."""
        scores = users @ items.T / self.config.temperature
        return scores if bias is None else scores + bias

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor, history: torch.Tensor,
                history_mask: torch.Tensor, rank_negatives: int = 1) -> torch.Tensor:
        """The training loss for a batch of (user, positive item) pairs.

        Full softmax over the catalogue for retrieval; plus, with a ranking head, the log loss
        L = -sum(y log p + (1 - y) log(1 - p)) over the positives and sampled negatives.
        """
        items = self.items()
        users = self.users(user_idx, history, history_mask, items.vectors)
        loss = F.cross_entropy(self.logits(users, items.vectors, items.bias), item_idx)
        if self.rank_head is not None:
            neg = torch.randint(0, self.config.n_items, (len(item_idx), rank_negatives), device=item_idx.device)
            pos_logit = self.rank(users, items.vectors[item_idx])
            neg_logit = self.rank(users.repeat_interleave(rank_negatives, 0), items.vectors[neg.flatten()])
            logits = torch.cat([pos_logit, neg_logit])
            labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
            loss = loss + F.binary_cross_entropy_with_logits(logits, labels)
        return loss

    def rank(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ranking-head logits for aligned (user, item) pairs [B]."""
        if self.rank_head is None:
            raise RuntimeError("this model was built without a ranking head (ranking_head: false)")
        return self.rank_head(torch.cat([users, items, users * items], dim=-1)).squeeze(-1)
