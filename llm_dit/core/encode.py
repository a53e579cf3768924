"""Chat text -> caption embeddings for the DiT: hidden layer choice, caption limit, long prompts.

We encode without padding: attention is causal and diffusers pads on the right, so the valid
tokens' hidden states are the same as in `ZImagePipeline._encode_prompt` (FACTS.md), at a
fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .devices import input_device
from .sequence import RESAMPLE_MODES, resample

try:  # the DiT pads caption and image sequences to this multiple
    from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF
except ImportError:  # pragma: no cover - older/newer layout
    SEQ_MULTI_OF = 32


def caption_limit(transformer) -> int:
    """Most caption tokens the loaded DiT can take, from its RoPE table (`axes_lens[0]`).

    Caption positions run 1..padded_len on axis 0 and the image starts at padded_len + 1, which
    must stay inside the table: padded_len <= axes_lens[0] - 2, a multiple of SEQ_MULTI_OF.
    1504 for the released Z-Image config (axes_lens[0] = 1536).
    """
    axis0 = int(transformer.config.axes_lens[0])
    return ((axis0 - 2) // SEQ_MULTI_OF) * SEQ_MULTI_OF


@dataclass
class Encoded:
    embeds: torch.Tensor | None  # [tokens, hidden], the sequence the DiT receives (None: only counted)
    token_count: int  # tokens of the chat text, before any long-prompt handling
    caption_limit: int
    long_prompt_mode: str
    long_prompt_applied: bool  # True when token_count > caption_limit and the mode was used

    def describe(self) -> str:
        if not self.long_prompt_applied:
            return f"{self.token_count} tokens (limit {self.caption_limit})"
        return (
            f"{self.token_count} tokens exceed the caption limit of {self.caption_limit}: "
            f"reduced to {self.caption_limit} with long_prompt_mode={self.long_prompt_mode}"
        )


def check_hidden_layer(hidden_layer: int, num_layers: int, name: str = "hidden_layer",
                       model: str = "the text encoder") -> None:
    """`hidden_states` has num_layers + 1 entries (embeddings + each layer)."""
    count = num_layers + 1
    if not -count <= hidden_layer < count:
        raise ValueError(
            f"{name}={hidden_layer} is outside {model}'s {count} hidden states: "
            f"use -1 (after the final norm) to -{count} (the token embeddings)."
        )


@torch.no_grad()
def encode_text(
    text_encoder,
    tokenizer,
    chat_text: str,
    limit: int,
    hidden_layer: int = -2,
    long_prompt_mode: str = "interpolate",
    max_tokens: int | None = None,
) -> Encoded:
    """Embeddings `hidden_states[hidden_layer]` of every token of `chat_text`, at most `limit`."""
    if long_prompt_mode not in RESAMPLE_MODES:
        raise ValueError(
            f"long_prompt_mode={long_prompt_mode!r} is unknown: use one of {', '.join(RESAMPLE_MODES)}."
        )
    check_hidden_layer(hidden_layer, text_encoder.config.num_hidden_layers)
    ids = tokenizer(chat_text, return_tensors="pt", add_special_tokens=False).input_ids
    if max_tokens is not None and ids.shape[1] > max_tokens:
        raise ValueError(f"prompt: the chat text is {ids.shape[1]:,} tokens long; the limit is {max_tokens:,} "
                         f"(the DiT reads at most {limit:,}): shorten the prompt or the system prompt.")
    device = input_device(text_encoder)
    out = text_encoder(input_ids=ids.to(device), output_hidden_states=True)
    embeds = out.hidden_states[hidden_layer][0]
    count = embeds.shape[0]
    applied = count > limit
    if applied:
        embeds = resample(embeds, limit, long_prompt_mode)
    return Encoded(embeds, count, limit, long_prompt_mode, applied)
