"""Similarity scores with a CLIP or SigLIP model (`--metrics-model`): how close a generated image
is to the reference (style) and to the prompt (content), as cosine similarities in [-1, 1].

The model is loaded with transformers' own Auto classes from a local folder; it ranks sweep cells
beside the cheap metrics (palette distance, SSIM), which need no model.
"""

from __future__ import annotations

import os

import torch
from PIL import Image


class Scorer:
    def __init__(self, folder: str):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        folder = os.path.expanduser(folder)
        if not os.path.isdir(folder):
            raise ValueError(f"metrics_model={folder!r} is not a folder: give a local CLIP or SigLIP folder "
                             f"(e.g. a download of openai/clip-vit-base-patch32), or leave it empty.")
        try:
            self.model = AutoModel.from_pretrained(folder).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.image_processor = AutoImageProcessor.from_pretrained(folder)
        except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
            raise ValueError(f"metrics_model={folder!r} could not be loaded as a CLIP or SigLIP model: {err}") from err
        if not all(hasattr(self.model, f) for f in ("get_image_features", "get_text_features")):
            raise ValueError(f"metrics_model={folder!r} holds a {type(self.model).__name__}, which has no image and "
                             f"text embeddings: use a CLIP or SigLIP folder.")
        self.siglip = "siglip" in self.model.config.model_type
        self.source = folder

    @staticmethod
    def _unit(out) -> torch.Tensor:
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def image_embeds(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        return self._unit(self.model.get_image_features(pixel_values=pixels["pixel_values"]))

    @torch.no_grad()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        # SigLIP was trained on max-length padded text; CLIP pools at the end token either way
        limit = self.model.config.text_config.max_position_embeddings
        ids = self.tokenizer(texts, padding="max_length" if self.siglip else True, truncation=True,
                             max_length=limit, return_tensors="pt")
        return self._unit(self.model.get_text_features(**{k: v for k, v in ids.items() if k != "token_type_ids"}))

    def score(self, image: Image.Image, reference: Image.Image, prompt: str) -> dict:
        """`style_similarity` (image vs reference) and `prompt_similarity` (image vs prompt)."""
        image_embed, reference_embed = self.image_embeds([image, reference])
        text_embed = self.text_embeds([prompt])[0]
        return {"style_similarity": round(float(image_embed @ reference_embed), 4),
                "prompt_similarity": round(float(image_embed @ text_embed), 4)}
