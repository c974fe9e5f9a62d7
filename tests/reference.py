"""Reference computations in plain NumPy, written from the model's equations rather than from its code.

Tests compare what fusionrec computes (in torch, or served over HTTP) against these, so that a change in
the model code that alters a value is caught instead of being reproduced by the test.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf


def _linear(x: np.ndarray, sd: dict[str, np.ndarray], name: str) -> np.ndarray:
    out = x @ sd[f"{name}.weight"].T
    return out + sd[f"{name}.bias"] if f"{name}.bias" in sd else out


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def projection(sd: dict[str, np.ndarray], modality: str, x: np.ndarray) -> np.ndarray:
    """Linear -> GELU -> (dropout, off at inference) -> Linear -> LayerNorm, as the model card describes."""
    p = f"projections.{modality}"
    h = _linear(_gelu(_linear(x, sd, f"{p}.0")), sd, f"{p}.3")
    return _layer_norm(h, sd[f"{p}.4.weight"], sd[f"{p}.4.bias"])


def gate_weights(sd: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    """Gated fusion's weight per item and modality: softmax over the present modalities of
    w . tanh(W h_m + b); an item with no modality has all zeros. Inputs are the ``feat_<m>`` and
    ``mask_<m>`` buffers of a state dict (numpy arrays)."""
    sd = {k: np.asarray(v, dtype=np.float64) if v.dtype != bool else v for k, v in sd.items()}
    logits, masks = [], []
    for m in modalities:
        h = projection(sd, m, sd[f"feat_{m}"])
        logits.append((np.tanh(_linear(h, sd, "fusion.proj")) @ sd["fusion.score.weight"].T)[:, 0])
        masks.append(sd[f"mask_{m}"].astype(bool))
    logits, masks = np.stack(logits, 1), np.stack(masks, 1)
    logits = np.where(masks, logits, -np.inf)
    top = np.where(masks.any(1, keepdims=True), logits.max(1, keepdims=True), 0.0)
    e = np.where(masks, np.exp(logits - top), 0.0)
    return e / np.maximum(e.sum(1, keepdims=True), 1e-300)


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def score_terms(sd: dict[str, np.ndarray], modalities: list[str], temperature: float, user: np.ndarray) -> np.ndarray:
    """Gated fusion's retrieval score of every item for one user vector, split into one term per modality,
    the ID term and the constant bias ([n_items, M + 2]), from the equations:

    v = sum_m w_m h_m + seen * e_id;  score = u . v / (T |v|) + c . (sum_m w_m h_m) + c0 + seen * b_id
    """
    sd64 = {k: np.asarray(v, dtype=np.float64) if v.dtype != bool else v for k, v in sd.items()}
    w = gate_weights(sd, modalities)
    parts = [w[:, [n]] * projection(sd64, m, sd64[f"feat_{m}"]) for n, m in enumerate(modalities)]
    seen = sd["item_seen"].astype(np.float64)[:, None]
    id_part = sd64["item_id.weight"] * seen
    norm = np.maximum(np.linalg.norm(sum(parts) + id_part, axis=1), 1e-12)
    c, c0 = sd64["content_bias.weight"][0], float(sd64["content_bias.bias"][0])
    terms = [p @ user / (temperature * norm) + p @ c for p in parts]
    terms.append(id_part @ user / (temperature * norm) + sd64["id_bias.weight"][:, 0] * seen[:, 0])
    terms.append(np.full(len(norm), c0))
    return np.stack(terms, 1)


def item_item_term(sd: dict[str, np.ndarray], history: np.ndarray) -> np.ndarray:
    """The item-item term of every item for one user [n_items]: weight * sum over the history items h of
    B[h, :], with B the dense matrix the stored neighbours (``ii_index``, ``ii_value``) describe."""
    index, value = sd["ii_index"], np.asarray(sd["ii_value"], dtype=np.float64)
    dense = np.zeros((len(index), len(index)))
    for h in range(len(index)):
        dense[h, index[h]] = value[h]
    return float(sd["ii_weight"]) * dense[np.asarray(history, dtype=np.int64)].sum(0)


def content_term(sd: dict[str, np.ndarray], modalities: list[str], history: np.ndarray) -> np.ndarray:
    """The content term of every item for one user [n_items]: weight * cos(the sum of the history items'
    content vectors, each item's), an item's content vector its modalities' features each scaled to unit
    length (zero where masked), concatenated and scaled to unit length; plus the content neighbourhood's
    weight times the sum of the history items' neighbourhood rows (``cn_index``, ``cn_value``); plus the taste
    term (:func:`taste_term`)."""

    def unit(x: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    c = unit(
        np.concatenate(
            [unit(np.asarray(sd[f"feat_{m}"], dtype=np.float64)) * sd[f"mask_{m}"][:, None] for m in modalities], 1
        )
    )
    history = np.asarray(history, dtype=np.int64)
    out = float(sd["cc_weight"]) * c @ unit(c[history].sum(0))
    index, value = sd.get("cn_index"), sd.get("cn_value")
    if index is not None and index.shape[1] and float(sd.get("cn_weight", 0.0)):
        rows = np.zeros(len(c))
        for h in history:
            np.add.at(rows, index[h], value[h])
        out = out + float(sd["cn_weight"]) * rows
    return out + taste_term(sd, history)


def taste_term(sd: dict[str, np.ndarray], history: np.ndarray) -> np.ndarray:
    """The taste term of every item for one user [n_items]: weight * (log((n_c + 1) / (n + K)) + log K) at each
    item's cluster c (``tc_label``) of the K (``tc_clusters``), n_c the history's items in c and n its length."""
    K, w = int(sd.get("tc_clusters", 0)), float(sd.get("tc_weight", 0.0))
    label = np.asarray(sd.get("tc_label", np.zeros(0)), dtype=np.int64)
    if K == 0 or w == 0.0:
        return np.zeros(len(label))
    history = np.asarray(history, dtype=np.int64)
    counts = np.array([np.sum(label[history] == c) for c in range(K)], dtype=np.float64)
    return w * (np.log((counts[label] + 1) / (len(history) + K)) + np.log(K))
