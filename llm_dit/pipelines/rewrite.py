"""Prompt rewriting: a short idea -> a detailed prompt, by a rewriter template and a backend.

Backends: `qwen3` (the Z-Image text encoder's own weights with its tied head; no second copy),
`qwen3_vl` (the VL model, which can also look at an image; loaded and released like for
extraction) and `openai` (any OpenAI-compatible chat-completions server over HTTP). Each streams.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

from ..serving import cancel
from ..serving.http import HttpExchange
from ..core.images import load_image
from ..core.devices import input_device
from ..serving.policy import Policy
from ..core.prompt import format_chat
from ..core.request import RewriteRequest, validate_rewrite
from ..core.templates import Template, get_template
from ..conditioning.vl import ExtractionParams, build_inputs

THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
JSON_BLOCK = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
QUOTES = "\"'“”‘’`"


@dataclass
class RewriteResult:
    text: str  # the cleaned prompt, ready to use
    raw: str  # the reply as received
    seed: int
    metadata: dict = field(default_factory=dict)


def visible_text(raw: str) -> str:
    """The reply so far as a person should see it while it streams: without its <think> part (an
    unclosed one hides everything after it)."""
    return THINK.sub("", raw).strip()


def clean_reply(raw: str, template: Template) -> str:
    """Strip any <think>…</think>, take the JSON block's `revised_prompt` when the template asks
    for JSON, trim quotes. Raises ValueError when nothing usable is left."""
    text = visible_text(raw)
    if template.output == "json":
        match = JSON_BLOCK.search(text)
        candidate = match.group(1) if match else text
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            raise ValueError("the reply has no valid ```json block: try again, or raise max_new_tokens "
                             "if it was cut off.") from None
        if not isinstance(data, dict) or not str(data.get("revised_prompt") or "").strip():
            raise ValueError("the reply's JSON has no `revised_prompt`: try again or use another template.")
        text = str(data["revised_prompt"])
    text = text.strip().strip(QUOTES).strip()
    if not text:
        raise ValueError("the reply has no usable text (empty, or only thinking): raise max_new_tokens, "
                         "or turn thinking mode off.")
    return text


def _generation_kwargs(request: RewriteRequest) -> dict:
    return {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p,
            "top_k": request.top_k or None, "min_p": request.min_p or None,
            "max_new_tokens": request.max_new_tokens}


def _generate(job, request: RewriteRequest, seed: int, stream: bool) -> Iterator[str]:
    """The generated text: streamed from a worker thread, or (stream=False) in this thread, which
    lets a caller already inside a VL session (a comparison sweep) reuse its loaded model."""
    if stream:
        return _stream_generate(job, request, seed)
    return _generate_here(job, request, seed)


def _generate_here(job, request: RewriteRequest, seed: int) -> Iterator[str]:
    with job() as (model, tokenizer, inputs):
        device = input_device(model)
        ids = _stop_ids(tokenizer)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(**{k: v.to(device) for k, v in inputs.items()}, eos_token_id=ids,
                                 pad_token_id=ids[0], **_generation_kwargs(request))
        yield tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _stream_generate(job, request: RewriteRequest, seed: int) -> Iterator[str]:
    """Run `job` in a worker thread and stream its generated text back as it grows.

    `job()` is a context manager yielding (model, tokenizer, inputs). Everything that holds a lock
    or a loaded model (the rewrite lock, a VL session) lives in the worker thread, never across a
    `yield`: Gradio may resume or close this generator from any thread. Closing it stops the
    generation at the next token (a stopping criterion), then waits for the worker.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    stop, ready, holder, errors = threading.Event(), threading.Event(), {}, []
    scope = cancel.current()  # the caller's stop event; the worker thread does not inherit it

    def cancelled() -> bool:
        return scope is not None and scope.is_set()

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set() or cancelled(), dtype=torch.bool,
                              device=input_ids.device)

    def work():
        try:
            with job() as (model, tokenizer, inputs):
                streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
                holder["streamer"] = streamer
                ready.set()
                device = input_device(model)
                ids = _stop_ids(tokenizer)
                torch.manual_seed(seed)
                with torch.no_grad():
                    model.generate(**{k: v.to(device) for k, v in inputs.items()}, streamer=streamer,
                                   eos_token_id=ids, pad_token_id=ids[0],
                                   stopping_criteria=StoppingCriteriaList([Stop()]), **_generation_kwargs(request))
        except Exception as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)
            if "streamer" in holder:
                holder["streamer"].end()
        finally:
            ready.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        ready.wait()
        text = ""
        for piece in holder.get("streamer", ()):
            text += piece
            yield text
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


def _stop_ids(tokenizer) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    return [i for i in ids if i is not None and i >= 0]


def _qwen3(manager, request: RewriteRequest, template: Template, seed: int, stream: bool) -> Iterator[str]:
    chat = format_chat(request.prompt, system_prompt=template.system_prompt,
                       force_think_block=not request.thinking)  # instruct mode: empty think block

    @contextmanager
    def job():
        with manager.rewrite_lock:
            tokenizer = manager.pipeline().tokenizer
            yield manager.language_model(), tokenizer, dict(
                tokenizer(chat, return_tensors="pt", add_special_tokens=False))

    return _generate(job, request, seed, stream)


def _qwen3_vl(manager, request: RewriteRequest, template: Template, image, seed: int,
              stream: bool) -> Iterator[str]:
    settings = manager.settings
    params = ExtractionParams(text=request.prompt, system_prompt=template.system_prompt)

    @contextmanager
    def job():
        with manager.rewrite_lock, manager.vl_model() as (model, processor):
            yield model, processor.tokenizer, build_inputs(processor, image, params, settings.vl_min_pixels,
                                                           settings.vl_max_pixels)

    return _generate(job, request, seed, stream)


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _openai(request: RewriteRequest, template: Template, image, seed: int, policy) -> Iterator[str]:
    """POST /chat/completions (streaming SSE) to the server the policy allows, within one total
    deadline (`timeout`) and a reply-size cap."""
    content = [{"type": "text", "text": request.prompt or "Describe this image."}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": _data_url(image)}})
    body = {"model": request.model, "stream": True, "seed": seed, "max_tokens": request.max_new_tokens,
            "temperature": request.temperature, "top_p": request.top_p,
            **({"top_k": request.top_k} if request.top_k else {}),  # vLLM / llama.cpp / Ollama extensions,
            **({"min_p": request.min_p} if request.min_p else {}),  # sent only when set (OpenAI rejects them)
            "messages": [{"role": "system", "content": template.system_prompt},
                         {"role": "user", "content": content if image is not None else content[0]["text"]}]}
    base_url, key_env, label = policy.rewrite_target(request.server, request.base_url, request.api_key_env,
                                                     request.model)
    key = os.environ.get(key_env, "") if key_env else ""
    exchange = HttpExchange(base_url.rstrip("/") + "/chat/completions", body,
                            {"Authorization": f"Bearer {key}"} if key else {}, label, request.timeout,
                            echo_errors=not policy.hosted)
    yield from _read_stream(exchange.lines(), label)


def _read_stream(lines: Iterator[str], label: str) -> Iterator[str]:
    """Text from an SSE stream of chat.completion.chunk events (or one plain JSON reply)."""
    text, saw_event, plain = "", False, []
    for line in lines:
        if not line.startswith("data:"):
            plain.append(line)
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        try:
            delta = json.loads(payload)["choices"][0].get("delta") or {}
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise ValueError(f"the {label} sent a malformed stream event: check that it is OpenAI-compatible.") from None
        saw_event = True
        text += delta.get("content") or ""
        yield text
    if saw_event:
        return
    try:  # not a stream: one plain chat completion
        yield json.loads("\n".join(plain))["choices"][0]["message"]["content"] or ""
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise ValueError(f"the {label} sent no text, or a reply that is not a chat completion.") from None


def rewrite_stream(manager, request: RewriteRequest, image=None, stream: bool = True) -> Iterator[RewriteResult]:
    """Partial results while the backend streams (`text` is the visible reply so far, `metadata`
    empty); the last one is cleaned (and final)."""
    policy = getattr(manager, "policy", None) or Policy(hosted=False, reason="no manager: a local call")
    validate_rewrite(request, has_image=image is not None, policy=policy)
    template = get_template(request.template, "rewriter")
    image = load_image(image, field="image") if image is not None else None
    seed = random.randrange(2**32) if int(request.seed) == -1 else int(request.seed)
    started = time.perf_counter()
    if request.backend == "qwen3":
        chunks = _qwen3(manager, request, template, seed, stream)
    elif request.backend == "qwen3_vl":
        chunks = _qwen3_vl(manager, request, template, image, seed, stream)
    else:
        chunks = _openai(request, template, image, seed, policy)
    raw = ""
    for raw in chunks:
        yield RewriteResult(text=visible_text(raw), raw=raw, seed=seed)
    metadata = {"backend": request.backend, "template": template.name, "seed": seed,
                "model": (f"{request.server or 'local server'}: {request.model}") if request.backend == "openai" else
                manager.vl_model_id if request.backend == "qwen3_vl" else manager.zimage_model_id,
                "seconds": round(time.perf_counter() - started, 3), "request": asdict(request)}
    yield RewriteResult(clean_reply(raw, template), raw, seed, metadata)


def rewrite(manager, request: RewriteRequest, image=None) -> RewriteResult:
    """Rewrite without streaming (in this thread): the final, cleaned result."""
    result = None
    for result in rewrite_stream(manager, request, image, stream=False):
        pass
    return result
