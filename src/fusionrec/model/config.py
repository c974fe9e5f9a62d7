"""The fusion model's typed configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FusionConfig(BaseModel):
    """Everything that shapes the fusion model. Built once, saved beside the weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(ge=1)
    n_items: int = Field(ge=1)
    modalities: dict[str, int] = Field(default_factory=dict)  # name -> input dimension
    dim: int = Field(64, ge=4)
    fusion: Literal["gated", "concat"] = "gated"
    use_item_id: bool = True
    use_user_id: bool = True
    history_length: int = Field(50, ge=0)  # the user's latest training items the user tower attends to
    modality_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # per item and modality, in training
    id_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # items trained content-only now and then: cold-ready
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    temperature: float = Field(0.2, gt=0.0)  # chosen among 0.1-0.3: docs/model.md, 'What moved the figures'
    ranking_head: bool = False
    # A per-item score bias added to the retrieval logits: a learned function of the item's content
    # (so cold items get one) plus an ID term for items seen in training. It carries popularity (what it
    # brings cold items: docs/model.md).
    item_bias: bool = True
    # An item-item term (EASE, Steck 2019): score += w * sum over the user's history h of B[h, item], B
    # fitted in closed form on the training rows after the network is trained, its ridge and the weight w
    # chosen together on validation NDCG@20 (fusionrec.itemitem). Each item keeps its `item_item` strongest
    # neighbours; 0 turns the term off. 512 rather than 128 neighbours, with the whole history below: what
    # each brought is in docs/model.md ('What moved the figures'; benchmarks/accuracy.py measures it).
    # Up to `item_item_dense_up_to` items B is the exact n x n inverse; above, the sparse form (the Gram
    # matrix's top `item_item_rank` eigenpairs exactly, the rest to first order around the ridge or, where
    # the eigenvalues left out near it, around the remainder's diagonal, only where two items were bought
    # together; fusionrec.itemitem.SparseEase), so the term never switches off
    # (benchmarks/item_item_scale.py measures both).
    item_item: int = Field(512, ge=0)
    item_item_dense_up_to: int = Field(4000, ge=0)
    item_item_rank: int = Field(512, ge=1)
    # The sparse form's pairs: besides each item's co-occurring items, the catalogue's `item_item_popular` most
    # bought items in every row (fusionrec.itemitem.with_popular), whose EASE weights rank though never bought
    # together. 0, the default (co-occurring pairs only): on development seeds the whole model gained nothing
    # from it (docs/model.md); the term alone did.
    item_item_popular: int = Field(0, ge=0, le=4096)  # n x 4,096 pairs at most
    # The user's latest items the item-item term sums over (EASE's own score sums over the whole row); longer
    # than the tower's window (docs/model.md has what it brought), and 1,000 covers every user's whole
    # training history on movielens-100k-mm. No cost in training, where the term is not used.
    item_item_history: int = Field(1000, ge=0)
    # A content term: score += w * cos(the mean of the user's history items' content vectors, the item's), the
    # content vector being the item's encoder vectors (each modality unit-normalised, then concatenated):
    # the content nearest-neighbour peer's own score, as a term of ours. Its weight is chosen on validation
    # NDCG@20 after the item-item term (fusionrec.itemitem.fit_content_term; 0 when it does not help). It
    # carries sparse catalogues, where most items have one or two interactions (docs/model.md).
    content_term: bool = True
    # Beside it, the content neighbourhood: score += w_n * sum over the history h of cos(c_h, c_item)^p,
    # over each item's `content_neighbours` most similar items by content (kept sparse, like the item-item
    # term): an item close to any one history item scores, where the mean above blurs a mixed history (a
    # shopper's new colour of a product bought before). w_n and p are chosen on validation with w
    # (fit_content_term). Built up to `content_neighbours_up_to` items (brute force, n^2 products).
    content_neighbours: int = Field(32, ge=0)
    content_neighbours_up_to: int = Field(100_000, ge=0)
    # And the taste term: score += w_t * log of the history's smoothed share of the item's taste cluster against
    # an even share, the clusters made by k-means on the item tower's content vectors once it is trained (what
    # behaviour taught the tower about content: a genre, a colour), so a user whose history leans to a kind of
    # item sees more of it, warm or cold. The cluster count and w_t are chosen on validation NDCG@20 after the
    # content term (fusionrec.itemitem.fit_taste_term; w_t 0 when no setting helps). Part of the content term.
    taste_clusters: bool = True

    @property
    def history_window(self) -> int:
        """How many of a user's latest items are kept with the model (the longest of the three uses)."""
        sums = self.item_item_neighbours or (self.content_term and self.modalities)
        return max(self.history_length, self.item_item_history if sums else 0)

    @property
    def item_item_neighbours(self) -> int:
        """Neighbours kept per item (0: no item-item term): ``item_item``, fewer where the catalogue times it
        would pass 2^27 values (the term's buffers at most 1.5 GiB: 134 neighbours at 10^6 items)."""
        return min(self.item_item, self.n_items, max(1, 2**27 // self.n_items))

    @property
    def content_neighbour_count(self) -> int:
        """Content neighbours kept per item (0: no content neighbourhood)."""
        if not (self.content_term and self.modalities) or self.n_items > self.content_neighbours_up_to:
            return 0
        return min(self.content_neighbours, self.n_items - 1)
