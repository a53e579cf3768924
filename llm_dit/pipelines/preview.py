"""What Z-Image will read for a prompt, before anything runs: the exact chat text, its token count
against the DiT's caption limit, and what happens past that limit.

Only the tokenizer loads (once per checkpoint, a few MB), and the caption limit is read from the
DiT's `config.json`: no model weights are touched. When the pipeline is already loaded, its own
tokenizer and DiT config are used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

from ..runtime import download
from ..core.encode import caption_limit
from .generate import chat_parts
from ..core.prompt import format_chat
from ..core.request import GenerationRequest, check_text, field_meta
from ..core.sequence import RESAMPLE_MODES

_load_lock = threading.Lock()


@dataclass(frozen=True)
class PromptPreview:
    chat: str  # the chat text the text encoder reads
    tokens: int  # its token count
    limit: int  # the DiT's caption limit
    refused_over: int  # a chat text longer than this is refused before anything runs
    long_prompt_mode: str

    @property
    def fits(self) -> bool:
        return self.tokens <= self.limit

    def summary(self) -> str:
        """One line: `37 / 1,504 tokens · fits`, or what will happen to a longer prompt."""
        head = f"{self.tokens:,} / {self.limit:,} tokens"
        if self.fits:
            return f"{head} · fits"
        if self.tokens > self.refused_over:
            return f"{head} · too long: refused above {self.refused_over:,}; shorten the prompt or system prompt"
        return (f"{head} · {self.tokens - self.limit:,} over: long_prompt_mode={self.long_prompt_mode} "
                f"reduces it to {self.limit:,}")


@lru_cache(maxsize=4)
def _from_checkpoint(source: str) -> tuple:
    """Tokenizer and caption limit of a Z-Image checkpoint, without loading any weights."""
    from diffusers import ZImageTransformer2DModel
    from diffusers.configuration_utils import FrozenDict
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    config = ZImageTransformer2DModel.load_config(source, subfolder="transformer")
    return tokenizer, caption_limit(_ConfigOnly(FrozenDict(config)))


class _ConfigOnly:
    """A DiT's config without its weights: what `caption_limit` reads."""

    def __init__(self, config):
        self.config = config


def tokenizer_and_limit(manager) -> tuple:
    """The Z-Image tokenizer and caption limit: the loaded pipeline's, else from the checkpoint's
    tokenizer and config files (loaded once)."""
    if manager.is_loaded:
        pipe = manager.pipeline()
        return pipe.tokenizer, caption_limit(pipe.transformer)
    source = manager.zimage_source
    if not download.is_local(source):  # a hub id: only a cached snapshot; typing never downloads
        source = download.cached(source, download.ZIMAGE_FILES)
        if source is None:
            raise LookupError("Token count: appears once the Z-Image checkpoint is downloaded "
                              "(the first generation downloads it)")
    with _load_lock:
        return _from_checkpoint(source)


def preview_prompt(manager, request: GenerationRequest) -> PromptPreview:
    """The chat text of `request` (its prompt parts and style template, as a generation builds
    them) and its token count. Raises ValueError for text over its declared length."""
    check_text(request)
    if request.long_prompt_mode not in RESAMPLE_MODES:
        raise ValueError(f"long_prompt_mode={request.long_prompt_mode!r} is unknown: use one of "
                         f"{', '.join(RESAMPLE_MODES)}.")
    chat = format_chat(**chat_parts(request))
    tokenizer, limit = tokenizer_and_limit(manager)
    tokens = len(tokenizer(chat, add_special_tokens=False).input_ids)
    return PromptPreview(chat, tokens, limit, field_meta("prompt")["max_tokens"], request.long_prompt_mode)
