"""The fusion model's item-item term: EASE (Steck 2019) fitted on the training rows, kept sparse.

``B = -P / diag(P)`` with ``P = (X'X + lambda I)^-1`` and a zero diagonal, ``X`` the users-by-items
matrix of training positives; a user's item-item score for item ``j`` is ``sum_h B[h, j]`` over the
items ``h`` of their history. It sees what the two towers compress away (which items go together, item
by item), and the towers see what it cannot (content, cold items, new users' tastes by ID).

Fitted after the network is trained: the ridge ``lambda`` and the weight of the term in the model's score
together, by the combined validation NDCG@20 (weight 0 when it does not help). The ridge that serves EASE
alone best is not the one that complements the towers best: on movielens-100k-mm EASE alone prefers 500,
the sum 250 (all 3 seeds).
Each item keeps its ``k`` strongest neighbours (largest ``|B[h, j]|``), so the term costs
``history x k`` per user and ``n_items x k`` in the artifact.

Above ``FusionConfig.item_item_dense_up_to`` items the ``n x n`` inverse costs too much (memory
``8 n^2`` bytes, time ``n^3``), and the term is the sparse form (`SparseEase`): ``P`` from the Gram
matrix's top ``r`` eigenpairs (a randomized SVD of ``X``) exactly and its remaining spectrum to first
order, ``P ~ I/lambda - G/lambda^2 + V diag(1/(s+lambda) - 1/lambda + s/lambda^2) V'``, evaluated only
where two items were bought together (each item's ``k`` most co-occurring items) and, with
``FusionConfig.item_item_popular``, from every item to the catalogue's most bought ones (`with_popular`):
memory linear in the items and interactions, never ``n^2``. The remainder it leaves out is of order
``(s_r/lambda)^2`` for the eigenvalues ``s_r`` below the top ``r``; where ``s_r`` nears the ridge the
remainder is expanded around its own diagonal instead (`SparseEase` says when and why).
``benchmarks/item_item_scale.py`` measures it against the dense form (time, peak memory, Recall@20) and
alone up to 10^6 items.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

LAMBDAS = (100.0, 250.0, 500.0, 1000.0, 2000.0)
WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 48.0)
WEIGHTS += (64.0, 96.0, 128.0)  # the long-tail shop chose 64, the old top, with towers that knew little
# the content term's weights: its cosine lies in [-1, 1] where the towers' logits span about +-5 (temperature 0.2)
CONTENT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0)
# the content neighbourhood's weight and sharpness p (its values are cos^p), chosen with the weight above
NEIGHBOUR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
NEIGHBOUR_POWERS = (1.0, 4.0, 16.0)
# the taste term's cluster counts and weights (its values are log shares, about -2 to +2: fit_taste_term)
TASTE_CLUSTERS = (2, 4, 8, 16, 32, 64, 128)
TASTE_WEIGHTS = (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_LAMBDA = 500.0
VALID_USERS = 4000  # validation users the choices are made on (a random sample beyond that)


def ease(train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, lam: float) -> np.ndarray:
    """The dense EASE weights [n_items, n_items] (float32)."""
    X = np.zeros((n_users, n_items), dtype=np.float32)
    X[train_users, train_items] = 1.0
    G = X.T.astype(np.float64) @ X
    G[np.diag_indices(n_items)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B.astype(np.float32)


def prune(B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` largest weights by magnitude: (indices [n, k], values [n, k])."""
    idx = (
        np.argpartition(-np.abs(B), k - 1, axis=1)[:, :k]
        if k < B.shape[1]
        else np.tile(np.arange(B.shape[1]), (len(B), 1))
    )
    return idx.astype(np.int64), np.take_along_axis(B, idx, axis=1)


def interactions(train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """The binary users-by-items matrix of the training positives (float32 CSR, repeats counted once)."""
    X = sp.csr_matrix((np.ones(len(train_users), np.float32), (train_users, train_items)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def cooccurring(X: sp.csr_matrix, width: int, budget: int = 20_000_000) -> sp.csr_matrix:
    """Each item's ``width`` most co-occurring other items, made symmetric (a pair is kept where either
    item kept the other), with their co-occurrence counts: [n_items, n_items] float32 CSR, sorted indices,
    no diagonal.

    ``X' X`` is formed a slice of items at a time, each slice's product holding about ``budget`` values,
    so memory stays linear in the items (``width`` each) whatever the users' history lengths; the
    symmetric union is a sparse maximum (the count is the same both ways), 8 bytes a pair."""
    n = X.shape[1]
    XT = X.T.tocsr()
    rowlen = np.diff(X.indptr)
    cost = np.zeros(n, np.int64)  # values the product's row for each item holds at most
    has = np.diff(XT.indptr) > 0
    if XT.nnz:
        cost[has] = np.add.reduceat(rowlen[XT.indices], XT.indptr[:-1][has])
    csum = np.cumsum(cost)
    heads, tails, counts = [], [], []
    start = 0
    while start < n:
        base = csum[start - 1] if start else 0
        end = min(n, max(start + 1, int(np.searchsorted(csum, base + budget, side="right"))))
        C = (XT[start:end] @ X).tocoo()
        other = C.col != start + C.row  # an item's count with itself is the diagonal, kept elsewhere
        order = np.lexsort((C.col[other], -C.data[other], C.row[other]))  # by row, the most co-occurring first
        r, c, v = C.row[other][order], C.col[other][order], C.data[other][order]
        first = np.searchsorted(r, np.arange(end - start))
        keep = (np.arange(len(r)) - first[r]) < width
        heads.append(start + r[keep])
        tails.append(c[keep])
        counts.append(v[keep].astype(np.float32))
        start = end
    kept = sp.csr_matrix(
        (np.concatenate(counts), (np.concatenate(heads), np.concatenate(tails))), shape=(n, n), dtype=np.float32
    )
    del heads, tails, counts
    both = kept.maximum(kept.T.tocsr())  # CSR, like its operands
    both.sort_indices()
    return both


def with_popular(pairs: sp.csr_matrix, X: sp.csr_matrix, count: np.ndarray, most: int) -> sp.csr_matrix:
    """``pairs`` with the catalogue's ``most`` most bought items added to every row (an item's own row
    excepted), with their co-occurrence counts (0 where never bought together): [n, n] float32 CSR, sorted.

    EASE weighs a popular item from every history, co-occurring or not (the top eigenpairs' part of ``P``),
    and that weight ranks: restricted to co-occurring pairs, the exact weights lose Recall@20 on the item-item
    benchmark's shop (2,000 items, seed 1: 0.5428 against 0.5468 for all pairs)."""
    n = pairs.shape[0]
    top = np.argsort(-count, kind="stable")[: max(0, min(most, n))]
    if len(top) == 0:
        return pairs
    with_top = np.asarray((X.T @ X[:, top]).todense(), dtype=np.float32)  # [n, most]: G[:, top]
    rows = np.repeat(np.arange(n), len(top))
    cols = np.tile(top, n)
    own = rows != cols
    # every value is shifted by one so that a count of 0 stays an entry through the union, then shifted back
    added = sp.csr_matrix((with_top.ravel()[own] + 1.0, (rows[own], cols[own])), shape=(n, n), dtype=np.float32)
    shifted = pairs.copy()
    shifted.data = shifted.data + 1.0
    union = shifted.maximum(added)
    union.sort_indices()
    union.data -= 1.0
    return union


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of ``Y``'s columns (reduced QR). Above 2^27 values in float32 (torch), where
    numpy's QR would hold float64 copies of a matrix of gigabytes (the 10^6-item catalogue's peak)."""
    if Y.size <= 2**27:
        return np.linalg.qr(Y)[0]
    return torch.linalg.qr(torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32)))[0].numpy()


def top_eigen(X: sp.csr_matrix, rank: int, seed: int = 0, power: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The top ``rank`` eigenpairs of ``X' X`` by a randomized SVD of ``X`` (Halko et al. 2011):
    (eigenvalues [r] float64, eigenvectors [n_items, r] float32)."""
    m, n = X.shape
    rank = max(1, min(rank, m, n))
    width = min(n, rank + 10)
    rng = np.random.default_rng(seed)
    XT = X.T.tocsr()
    Y = X @ rng.standard_normal((n, width), dtype=np.float32)
    for _ in range(power):  # power iterations, orthonormalised each time
        Y = _orthonormal(Y)
        Y = X @ _orthonormal(XT @ Y)
    Q = _orthonormal(Y)
    del Y
    Bt = np.asarray(XT @ Q)  # [n, width]: X' Q, whose small Gram matrix gives the eigenpairs
    del Q
    small = np.zeros((width, width))
    for a in range(0, n, 65536):  # in float64, a slice of items at a time
        block = Bt[a : a + 65536].astype(np.float64)
        small += block.T @ block
    values, U = np.linalg.eigh(small)
    top = np.argsort(values)[::-1][:rank]
    values = np.maximum(values[top], 0.0)
    scale = (U[:, top] / np.sqrt(np.maximum(values, 1e-12))).astype(np.float32)
    return values, np.ascontiguousarray(Bt @ scale, dtype=np.float32)


ROWS = 65536  # items a slice in the n x r products below (at r = 512, 128 MiB a slice)
PAIRS = 2**22  # pairs a slice when the weights are ranked within rows


def _inner(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A' B`` [r, r'] for two [n, r] arrays, accumulated in float64 a slice of rows at a time."""
    out = np.zeros((A.shape[1], B.shape[1]))
    for a in range(0, len(A), ROWS):
        out += A[a : a + ROWS].T.astype(np.float64) @ B[a : a + ROWS].astype(np.float64)
    return out


def _rowdot(A: np.ndarray, B: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """``sum_k A[j, k] scale[k] B[j, k]`` for every row ``j`` (float64), a slice of rows at a time."""
    out = np.empty(len(A))
    for a in range(0, len(A), ROWS):
        left = A[a : a + ROWS] if scale is None else A[a : a + ROWS] * scale
        out[a : a + ROWS] = np.einsum("nr,nr->n", left, B[a : a + ROWS], dtype=np.float64)
    return out


class SparseEase:
    """EASE's weights where the dense inverse does not fit (the module docstring has the form). Built once
    per training matrix; ``weights(lambda, k)`` is cheap, so every ridge of the grid is tried.

    Where the smallest eigenvalue kept, ``s_r`` (a bound on those left out), reaches 0.4 of the ridge
    (``JACOBI``), the first-order remainder ``(s_r / lambda)^2`` is no longer small (a catalogue of 10^6,
    whose popular items' counts grow with the users), and the remainder is expanded around its own diagonal
    instead of ``lambda I``: with ``R = G - V S V'`` and ``L = lambda I + diag(R)``, ``P ~ Q (L^-1 - L^-1
    R_off L^-1) Q + V diag(1/(s + lambda)) V'``, ``Q = I - V V'`` (exact in ``V``'s span, first order in
    ``R``'s off-diagonal part elsewhere). It costs about 2.5 times the first-order form per ridge (two
    gathers more a pair). On the item-item benchmark's development shop (seed 0), Recall@20 of the two
    forms at a ridge of 500: 10^6 items, ``s_r`` 205 (0.41 of the ridge), 0.337 against 0.263; 10^5 items
    with 51 eigenpairs (``s_r`` 537), 0.518 against 0.286; 10^5 with 512 (``s_r`` 80, 0.16), 0.551 against
    0.554, the first-order form ahead. The threshold lies between, above the 0.34 that every catalogue of
    the accuracy benchmarks reaches at its smallest ridge (``s_r`` at most 34 against 100), whose weights
    are the first-order form's."""

    JACOBI = 0.4  # s_r / lambda from which the remainder is expanded around its diagonal

    def __init__(self, X: sp.csr_matrix, width: int, rank: int, seed: int = 0, popular: int = 0) -> None:
        self.n = X.shape[1]
        self.X = X
        self.count = np.asarray(X.sum(0), dtype=np.float64).ravel()  # the Gram matrix's diagonal
        self.pairs = cooccurring(X, width)  # the co-occurring pairs and their counts (CSR, symmetric)
        if popular:  # and the most bought items in every row (`with_popular`)
            self.pairs = with_popular(self.pairs, X, self.count, popular)
        self.eigenvalues, self.vectors = top_eigen(X, rank, seed)

    def form(self, lam: float) -> str:
        """Which expansion of the remainder ``weights(lam)`` uses: ``first-order`` or ``jacobi``."""
        return "jacobi" if self.eigenvalues[-1] > self.JACOBI * lam else "first-order"

    def _jacobi(self, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The diagonal-expanded form's parts: (L [n], P_jj [n], U, Z [n, r]) such that, for i != j,
        ``P_ij = (V_i S V_j - G_ij) / (L_i L_j) + V_i U_j - Z_i V_j`` (Z = Y V, U = V (V'Y V + diag(1/(s +
        lambda))) - Z for Y = L^-1 - L^-1 R_off L^-1)."""
        s, V = self.eigenvalues, self.vectors
        rest = np.maximum(self.count - _rowdot(V, V, s.astype(np.float32)), 0.0)  # diag(R), >= 0 as R is PSD
        L = lam + rest
        Z = V / L[:, None].astype(np.float32)  # W = L^-1 V, then Y V in place
        GW = np.asarray(self.X.T @ np.asarray(self.X @ Z), dtype=np.float32)
        SVW = (s[:, None] * _inner(V, Z)).astype(np.float32)
        for a in range(0, self.n, ROWS):  # R_off W = G W - V S V'W - diag(R) W; Y V = W - L^-1 R_off W
            part = GW[a : a + ROWS] - V[a : a + ROWS] @ SVW
            part -= rest[a : a + ROWS, None].astype(np.float32) * Z[a : a + ROWS]
            Z[a : a + ROWS] -= part / L[a : a + ROWS, None].astype(np.float32)
        del GW
        M = (_inner(V, Z) + np.diag(1.0 / (lam + s))).astype(np.float32)
        U = np.empty_like(Z)
        for a in range(0, self.n, ROWS):
            U[a : a + ROWS] = V[a : a + ROWS] @ M - Z[a : a + ROWS]
        p_jj = 1.0 / L + _rowdot(V, U) - _rowdot(V, Z)  # Y_jj = 1 / L_j, projected
        return L, p_jj, U, Z

    def weights(self, lam: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each item's ``k`` strongest weights ``B[h, :]`` by magnitude: (indices [n, k], values [n, k]);
        a row with fewer than ``k`` pairs is filled with its own index at weight 0."""
        s, V = self.eigenvalues, self.vectors
        jacobi = self.form(lam) == "jacobi"
        if jacobi:
            L, p_jj, U, Z = self._jacobi(lam)
            sf = s.astype(np.float32)
        else:
            c = (1.0 / (s + lam) - 1.0 / lam + s / lam**2).astype(np.float32)
            p_jj = 1.0 / lam - self.count / lam**2 + _rowdot(V, V, c)
        p_jj = np.maximum(p_jj, 1.0 / (lam + self.count))  # P_jj >= 1 / A_jj for A = G + lambda I
        S = self.pairs
        index = np.repeat(np.arange(self.n, dtype=np.int64)[:, None], k, axis=1)  # B[h, h] = 0
        value = np.zeros((self.n, k), np.float32)
        chunk = max(1, 2**24 // V.shape[1])  # pairs a product: gathers of 64 MiB (two, or four in the diagonal form)
        lo = 0
        while lo < self.n:  # a slice of rows at a time: rank each row's pairs by |B|, keep its k strongest
            hi = min(self.n, max(lo + 1, int(np.searchsorted(S.indptr, S.indptr[lo] + PAIRS, side="right")) - 1))
            a0, a1 = S.indptr[lo], S.indptr[hi]
            i = np.repeat(np.arange(lo, hi), np.diff(S.indptr[lo : hi + 1]))
            j, g = S.indices[a0:a1], S.data[a0:a1]
            b = np.empty(len(i), np.float32)
            for a in range(0, len(i), chunk):
                ia, ja, ga = i[a : a + chunk], j[a : a + chunk], g[a : a + chunk]
                if jacobi:
                    p_ij = (np.einsum("nr,nr->n", V[ia] * sf, V[ja]) - ga) / (L[ia] * L[ja]).astype(np.float32)
                    p_ij += np.einsum("nr,nr->n", V[ia], U[ja]) - np.einsum("nr,nr->n", Z[ia], V[ja])
                else:
                    p_ij = -ga / lam**2 + np.einsum("nr,nr->n", V[ia] * c, V[ja])
                b[a : a + chunk] = -p_ij / p_jj[ja]
            order = np.lexsort((-np.abs(b), i))  # by row (pairs come sorted by i, then j), the strongest first
            i, j, b = i[order], j[order], b[order]
            rank = np.arange(len(i)) - (S.indptr[i] - a0)  # each row keeps its place: its pairs' ranks
            keep = rank < k
            index[i[keep], rank[keep]] = j[keep].astype(np.int64)
            value[i[keep], rank[keep]] = b[keep]
            lo = hi
        return index, value


def _ndcg(scores: np.ndarray, users: np.ndarray, split) -> float:
    from fusionrec.evaluation import evaluate_ranking

    row = {int(u): r for r, u in enumerate(users)}
    valid = split.valid[split.valid["user_idx"].isin(users)]
    return evaluate_ranking(
        lambda us: scores[[row[int(u)] for u in us]], valid, [split.train], split.n_users, split.n_items, ks=(20,)
    ).ndcg[20]


def valid_users(split, seed: int) -> np.ndarray:
    """The validation users the choices are made on: all of them, or a random ``VALID_USERS``, sorted."""
    users = np.unique(split.valid["user_idx"].to_numpy())
    if len(users) > VALID_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, VALID_USERS, replace=False))
    return users


def fit_item_item(
    model, split, hist: torch.Tensor, hmask: torch.Tensor, network_scores, *, seed: int = 0, device: str = "cpu"
) -> dict[str, float]:
    """Fit the model's item-item term in place (``model.ii_*`` buffers) and say what was chosen.

    ``network_scores(users)`` gives the two towers' scores; the term is chosen on ``split.valid``.
    """
    k = model.ii_index.shape[1]
    if k == 0 or len(split.valid) == 0:
        return {}
    users = valid_users(split, seed)
    u = torch.from_numpy(users)
    base = np.asarray(network_scores(users), dtype=np.float32)
    tu, ti = split.train["user_idx"].to_numpy(), split.train["item_idx"].to_numpy()
    network = _ndcg(base, users, split)
    best = (network, 0.0, DEFAULT_LAMBDA, None)  # (combined NDCG, weight, ridge, (index, value))
    cfg = model.config
    if cfg.n_items <= cfg.item_item_dense_up_to:
        form = "dense"
        weights = lambda lam: prune(ease(tu, ti, split.n_users, split.n_items, lam), k)  # noqa: E731
    else:
        form = "sparse"
        X = interactions(tu, ti, split.n_users, split.n_items)
        sparse = SparseEase(X, k, cfg.item_item_rank, seed, popular=cfg.item_item_popular)
        weights = lambda lam: sparse.weights(lam, k)  # noqa: E731
    for lam in LAMBDAS:  # the ridge and the weight together, by the combined validation NDCG@20
        index, value = weights(lam)
        model.ii_index.copy_(torch.from_numpy(index))
        model.ii_value.copy_(torch.from_numpy(value))
        model.ii_weight.fill_(1.0)
        with torch.inference_mode():
            term = model.item_item(hist[u].to(device), hmask[u].to(device)).float().cpu().numpy()
        combined = {w: _ndcg(base + w * term, users, split) for w in WEIGHTS}
        w = max(combined, key=combined.get)  # the smallest of equally good weights
        ndcg = combined[w]
        log.info(
            "item-item (%s): lambda %g, valid NDCG@20 %.4f at weight %g (%.4f on its own)",
            form,
            lam,
            ndcg,
            w,
            _ndcg(term, users, split),
        )
        if ndcg > best[0] or best[3] is None:
            best = (ndcg, w, lam, (index, value))
    ndcg, chosen, lam, (index, value) = best
    model.ii_index.copy_(torch.from_numpy(index))
    model.ii_value.copy_(torch.from_numpy(value))
    model.ii_weight.fill_(float(chosen))
    out = {
        "lambda": lam,
        "weight": float(chosen),
        "sparse": float(form == "sparse"),
        "valid_ndcg@20_network": network,
        "valid_ndcg@20_with_item_item": ndcg if chosen else network,
    }
    log.info("item-item term: %s", out)
    return out


def content_neighbours(c: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's ``k`` nearest other items by content: (index [n, k], cosine [n, k], at least 0), from
    unit content vectors ``c`` [n, D], a slice of ``chunk`` items at a time (n^2 D products)."""
    n = c.shape[0]
    index = torch.zeros(n, k, dtype=torch.long)
    cosine = torch.zeros(n, k)
    with torch.inference_mode():
        for s in range(0, n, chunk):
            sims = c[s : s + chunk] @ c.T
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + s] = float("-inf")  # never its own neighbour
            v, i = sims.topk(k, dim=1)
            index[s : s + chunk], cosine[s : s + chunk] = i.cpu(), v.clamp(min=0).float().cpu()
    return index, cosine


def _sharpened(cosine: torch.Tensor, power: float) -> torch.Tensor:
    """The neighbourhood's values: cos^p, scaled so that an item's nearest neighbour weighs 1 on average."""
    values = cosine**power
    return values / max(float(values[:, 0].mean()), 1e-12)


def fit_content_term(
    model, split, hist: torch.Tensor, hmask: torch.Tensor, scores, *, seed: int = 0, device: str = "cpu"
):
    """Choose the content term in place, on ``split.valid`` NDCG@20 added to ``scores(users)`` (the towers
    and the item-item term as fitted): the mean-cosine weight (``cc_weight``) together with the content
    neighbourhood's weight and sharpness (``cn_weight``; ``cn_value`` = cos^p, scaled so that an item's
    nearest neighbour weighs 1 on average), by coordinate ascent (the mean's weight alone, then for each p
    the neighbourhood's weight, then the mean's again); then the item-item weight again beside it.
    Returns what was chosen ({} without the term)."""
    if not (model.config.content_term and model.modality_names) or len(split.valid) == 0:
        return {}
    users = valid_users(split, seed)
    u = torch.from_numpy(users)
    h, m = hist[u].to(device), hmask[u].to(device)
    with torch.inference_mode():
        content = model.content_term(h, m, weight=1.0, neighbour_weight=0.0).float().cpu().numpy()
        ii = model.item_item(h, m).float().cpu().numpy() if model.has_item_item else None
    base = np.asarray(scores(users), dtype=np.float32)  # with the item-item term at its fitted weight
    before = _ndcg(base, users, split)
    combined = {(w, 0.0, 0.0): _ndcg(base + w * content, users, split) for w in CONTENT_WEIGHTS}
    kc = model.cn_index.shape[1]
    if kc:
        index, cosine = content_neighbours(model.content_vectors(), kc)
        model.cn_index.copy_(index.to(device))
        w0 = max(combined, key=combined.get)[0]
        for power in NEIGHBOUR_POWERS:  # coordinate ascent: the neighbourhood's weight, then the mean's again
            model.cn_value.copy_(_sharpened(cosine, power).to(device))
            with torch.inference_mode():
                nb = model.content_term(h, m, weight=0.0, neighbour_weight=1.0).float().cpu().numpy()
            tried = {wn: _ndcg(base + w0 * content + wn * nb, users, split) for wn in NEIGHBOUR_WEIGHTS[1:]}
            combined.update({(w0, wn, power): v for wn, v in tried.items()})
            wn = max(tried, key=tried.get)
            combined.update(
                {(w, wn, power): _ndcg(base + w * content + wn * nb, users, split) for w in CONTENT_WEIGHTS}
            )
    weight, wn, power = max(combined, key=combined.get)  # the first tried of equally good settings
    if kc and wn:
        model.cn_value.copy_(_sharpened(cosine, power).to(device))
    out = {
        "weight": float(weight),
        "neighbour_weight": float(wn),
        "neighbour_power": float(power),
        "valid_ndcg@20_before": before,
        "valid_ndcg@20_alone": _ndcg(content, users, split),  # the mean's cosine alone: the content peer
    }
    model.cc_weight.fill_(float(weight))
    model.cn_weight.fill_(float(wn))
    best = combined[(weight, wn, power)]
    if ii is not None and (weight or wn) and float(model.ii_weight) != 0.0:  # the item-item weight again, beside it
        with torch.inference_mode():
            both = model.content_term(h, m).float().cpu().numpy()
        w_ii = float(model.ii_weight)
        towers = base - ii  # item_item() carries its weight
        again = {x: _ndcg(towers + (x / w_ii) * ii + both, users, split) for x in WEIGHTS}
        x = max(again, key=again.get)
        if again[x] > best:
            model.ii_weight.fill_(float(x))
            out["item_item_weight"] = float(x)
            best = again[x]
    out["valid_ndcg@20_with_content"] = best
    log.info("content term: %s", out)
    return out


def kmeans(x: torch.Tensor, k: int, *, seed: int = 0, iterations: int = 30, sample: int = 100_000) -> torch.Tensor:
    """Each row's cluster [n] among ``k`` by k-means (k-means++ seeding, Lloyd's iterations on at most ``sample``
    rows drawn with ``seed``, then every row to its nearest centre): deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    fit = x[torch.randperm(n, generator=g)[:sample]] if n > sample else x
    centres = fit[torch.randint(len(fit), (1,), generator=g)]
    nearest = torch.cdist(fit, centres).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++: the next centre drawn in proportion to its squared distance
        nxt = fit[torch.multinomial(nearest / nearest.sum().clamp(min=1e-12) + 1e-12, 1, generator=g)]
        centres = torch.cat([centres, nxt])
        nearest = torch.minimum(nearest, torch.cdist(fit, nxt).squeeze(1) ** 2)
    for _ in range(iterations):
        label = torch.cdist(fit, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, label, fit)
        sizes = torch.bincount(label, minlength=k).unsqueeze(1)
        centres = torch.where(sizes > 0, sums / sizes.clamp(min=1), centres)  # an empty cluster keeps its centre
    return torch.cat([torch.cdist(x[s : s + 65536], centres).argmin(1) for s in range(0, n, 65536)])


def taste_vectors(model) -> torch.Tensor:
    """The item tower's content part [n_items, dim], unit rows: every catalogue item through the tower without
    its ID (what the taste clusters are made from; a cold item has one like any other)."""
    feats = {m: (getattr(model, f"feat_{m}"), getattr(model, f"mask_{m}")) for m in model.modality_names}
    with torch.inference_mode():
        return model.items(content=feats).vectors.float().cpu()


def fit_taste_term(
    model, split, hist: torch.Tensor, hmask: torch.Tensor, scores, *, seed: int = 0, device: str = "cpu"
):
    """Choose the taste term in place (``tc_label``, ``tc_clusters``, ``tc_weight``), on ``split.valid`` NDCG@20
    added to ``scores(users)`` (the model as fitted so far): the catalogue clustered by k-means on the item
    tower's content vectors (:func:`taste_vectors`) into each of ``TASTE_CLUSTERS`` counts, and the weight from
    ``TASTE_WEIGHTS`` (0 when no setting helps). Returns what was chosen ({} without the term)."""
    if (
        not (model.config.content_term and model.config.taste_clusters and model.modality_names)
        or len(split.valid) == 0
    ):
        return {}
    users = valid_users(split, seed)
    u = torch.from_numpy(users)
    h, m = hist[u].to(device), hmask[u].to(device)
    base = np.asarray(scores(users), dtype=np.float32)
    before = _ndcg(base, users, split)
    vectors = taste_vectors(model)
    best = (before, 0, 0.0, torch.zeros_like(model.tc_label))  # (NDCG, clusters, weight, labels)
    for k in TASTE_CLUSTERS:
        if k >= model.config.n_items:
            break
        labels = kmeans(vectors, k, seed=seed).to(device)
        model.tc_label.copy_(labels)
        model.tc_clusters.fill_(k)
        with torch.inference_mode():
            term = model.taste_term(h, m, weight=1.0).float().cpu().numpy()
        tried = {w: _ndcg(base + w * term, users, split) for w in TASTE_WEIGHTS[1:]}
        w = max(tried, key=tried.get)
        log.info("taste term: %d clusters, valid NDCG@20 %.4f at weight %g (%.4f before)", k, tried[w], w, before)
        if tried[w] > best[0]:
            best = (tried[w], k, w, labels)
    ndcg, k, w, labels = best
    model.tc_clusters.fill_(k)
    model.tc_weight.fill_(w)
    model.tc_label.copy_(labels)
    out = {"taste_clusters": float(k), "taste_weight": float(w), "valid_ndcg@20_with_taste": ndcg}
    log.info("taste term: %s", out)
    return out
