"""Encoders on another machine: one running instance encodes (text, VL) for another.

The serving side (`encode_file`, `extract_file`) runs the instance's own encoders and writes the
result as `.safetensors` (tensors + string metadata); the app serves them as the `encode` and
`vl_encode` API endpoints, and the txt2img/img2img tabs export their prompt embeddings with the
same `encoding` and `save`. The using side (`RemoteEncoder`) is chosen by the operator with
`--text-encoder-url` / `--vl-url`; it calls those endpoints through `gradio_client`, checks that
the other model fits this DiT (hidden size, layer count, caption limit), and hands back the same
objects the local path makes, so the caches, the blend and the metadata work unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core.encode import Encoded, caption_limit, encode_text
from ..core.devices import ModelLoadError
from ..core.prompt import format_chat
from ..core.request import field_meta

# `format_chat`'s arguments: the prompt parts a remote encoding is asked for
PROMPT_PARTS = {"prompt": "", "system_prompt": "", "thinking_content": "", "assistant_content": "",
                "force_think_block": False, "strip_quotes": False}


class RemoteEncoderError(ModelLoadError):
    """The remote encoder cannot be reached, or does not fit this instance; names the URL."""


def save(tensors: dict, metadata: dict, path) -> Path:
    """Tensors and JSON-encoded string metadata as `.safetensors` at `path`."""
    save_file({k: v.contiguous() for k, v in tensors.items()},
              str(path), metadata={k: json.dumps(v) for k, v in metadata.items()})
    return Path(path)


def _write(tensors: dict, metadata: dict, folder: str | Path, kind: str) -> Path:
    handle, path = tempfile.mkstemp(prefix=f"{kind}-", suffix=".safetensors", dir=folder)
    os.close(handle)
    return save(tensors, metadata, path)


def _read(path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    return load_file(str(path)), metadata


# ---- the serving side ------------------------------------------------------------------------
def encoding(manager, parts: dict, hidden_layer: int, long_prompt_mode: str) -> tuple[dict, dict]:
    """The chat text of `parts` through this instance's text encoder: `{"embeds": [tokens, hidden]}`
    (what diffusers takes as one image's `prompt_embeds`) and what made it, as metadata."""
    pipe, lm = manager.pipeline(), manager.language_model()
    chat = format_chat(**parts)
    encoded = encode_text(lm.model, pipe.tokenizer, chat, caption_limit(pipe.transformer), hidden_layer,
                          long_prompt_mode, max_tokens=field_meta("prompt")["max_tokens"])
    return file_parts(manager, chat, encoded)


def file_parts(manager, chat: str, encoded) -> tuple[dict, dict]:
    """An `Encoded` of `chat` as a file's tensors and metadata (what `encoding` returns)."""
    config = manager.text_encoder_config()
    return {"embeds": encoded.embeds.cpu()}, {
        "chat": chat, "token_count": encoded.token_count, "caption_limit": encoded.caption_limit,
        "long_prompt_mode": encoded.long_prompt_mode, "long_prompt_applied": encoded.long_prompt_applied,
        "model": manager.zimage_model_id, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers}


def encode_file(manager, parts: dict, hidden_layer: int, long_prompt_mode: str, folder) -> Path:
    """`encoding` as a new `.safetensors` file in `folder`."""
    return _write(*encoding(manager, parts, hidden_layer, long_prompt_mode), folder, "encoding")


def extract_file(manager, image, params, folder) -> Path:
    """One VL extraction (or the cached one) by this instance's VL model, as `.safetensors`."""
    from ..conditioning.vl import extract

    ex = extract(manager, image, params)
    text_config = manager.vl_config().text_config
    return _write({"embeds": ex.embeds, "is_image": ex.is_image.to(torch.uint8)}, {
        "counts": ex.counts, "image_sha256": ex.image_sha256, "model": ex.model_id,
        "hidden_size": text_config.hidden_size, "num_hidden_layers": text_config.num_hidden_layers},
        folder, "extraction")


# ---- the using side --------------------------------------------------------------------------
class RemoteEncoder:
    """Another running instance of this app, used as the text encoder or the VL model."""

    def __init__(self, url: str, what: str, flag: str, hosted: bool = False):
        self.url, self.what, self.flag = url, what, flag
        # Messages and metadata name the URL; hosted, remote clients see only which setting it is.
        self.hosted, self.shown = hosted, (f"the {flag} address" if hosted else url)
        self._client = None
        self._lock = threading.Lock()

    def _fix(self) -> str:
        return (f"start an instance there (python app.py --port N, serving the same models), or change "
                f"{self.flag} ('' loads the model here)")

    def _call(self, api_name: str, **kwargs) -> tuple[dict, dict]:
        from gradio_client import Client
        from gradio_client.exceptions import AppError

        with self._lock:
            try:
                if self._client is None:
                    self._client = Client(self.url, verbose=False, download_files=tempfile.gettempdir())
                path = self._client.predict(**kwargs, api_name=f"/{api_name}")
            except AppError as err:  # the other instance ran and said no
                raise RemoteEncoderError(f"the {self.what} at {self.shown} refused the request: {err}") from err
            except Exception as err:  # noqa: BLE001 - unreachable, not this app, a broken reply
                self._client = None
                detail = type(err).__name__ if self.hosted else f"{type(err).__name__}: {err}"
                raise RemoteEncoderError(f"the {self.what} at {self.shown} could not be used for /{api_name} "
                                         f"({detail}): {self._fix()}.") from err
        try:
            return _read(path)
        finally:
            Path(path).unlink(missing_ok=True)

    def _check(self, metadata: dict, hidden_size: int, num_hidden_layers: int | None = None) -> None:
        theirs = (metadata["hidden_size"], metadata["num_hidden_layers"])
        if theirs[0] != hidden_size or (num_hidden_layers is not None and theirs[1] != num_hidden_layers):
            ours = f"hidden size {hidden_size}" + (f", {num_hidden_layers} layers" if num_hidden_layers else "")
            raise RemoteEncoderError(
                f"the {self.what} at {self.shown} ({metadata['model']}) has hidden size {theirs[0]} and "
                f"{theirs[1]} layers, but this instance needs {ours}: point {self.flag} at an instance "
                f"serving the matching model.")

    def encode(self, parts: dict, hidden_layer: int, long_prompt_mode: str, limit: int, config) -> Encoded:
        """Like `encode.encode_text` on the chat text of `parts`; `config` is the text encoder
        config this instance's checkpoint declares (the remote one must match it)."""
        parts = {**PROMPT_PARTS, **parts}
        tensors, meta = self._call("encode", **parts, template="", hidden_layer=hidden_layer,
                                   long_prompt_mode=long_prompt_mode)
        self._check(meta, config.hidden_size, config.num_hidden_layers)
        if meta["caption_limit"] != limit:
            raise RemoteEncoderError(f"the {self.what} at {self.shown} cuts captions at {meta['caption_limit']} "
                                     f"tokens, this DiT at {limit}: serve the same Z-Image checkpoint there.")
        if meta["chat"] != format_chat(**parts):
            raise RemoteEncoderError(f"the {self.what} at {self.shown} formats prompts differently (another "
                                     f"version?): run the same version of this app there.")
        return Encoded(tensors["embeds"], meta["token_count"], limit, long_prompt_mode, meta["long_prompt_applied"])

    def extract(self, image, params, hidden_size: int):
        """Like `vl.run_extraction`: (embeds, is_image, counts) for `image` (None: text only)."""
        from gradio_client import handle_file

        with tempfile.TemporaryDirectory() as folder:
            reference = None
            if image is not None:  # lossless: the other side sees exactly these pixels
                image.save(Path(folder) / "reference.png")
                reference = handle_file(str(Path(folder) / "reference.png"))
            tensors, meta = self._call(
                "vl_encode", reference=reference, vl_text=params.text, vl_system_prompt=params.system_prompt,
                vl_think_block=params.think_block, vl_hidden_layer=params.hidden_layer,
                vl_text_hidden_layer=params.text_hidden_layer, token_mode=params.token_mode)
        self._check(meta, hidden_size)
        return tensors["embeds"], tensors["is_image"].bool(), meta["counts"]


def reference_stats(remote: RemoteEncoder, layer: int, limit: int, config):
    """The text encoder's per-dim statistics (as `vl.reference_stats`) from remote encodings."""
    from ..conditioning.blend import ReferenceStats
    from ..conditioning.vl import CALIBRATION_PROMPTS

    tokens = torch.cat([remote.encode({"prompt": p}, layer, "interpolate", limit, config).embeds.float()
                        for p in CALIBRATION_PROMPTS])
    return ReferenceStats(tokens.mean(dim=0), tokens.std(dim=0, correction=0))
