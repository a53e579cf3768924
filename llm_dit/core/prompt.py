"""Prompt parts -> Qwen3 chat text (BRIEF §2), with the exact strings Z-Image was trained on."""

from __future__ import annotations

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"


def format_chat(
    prompt: str,
    system_prompt: str = "",
    thinking_content: str = "",
    assistant_content: str = "",
    force_think_block: bool = False,
    strip_quotes: bool = False,
) -> str:
    """The Qwen3 chat text for one prompt.

    Default (no other parts) is what the official demo feeds the text encoder:
    `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`. A think block is added
    when `thinking_content` is given or `force_think_block` is set; `assistant_content` follows it
    (the assistant turn is left open, as at generation time). `strip_quotes` removes `"` from the
    user prompt, which Z-Image would otherwise render as text.
    """
    if strip_quotes:
        prompt = prompt.replace('"', "")
    text = ""
    if system_prompt:
        text += f"{IM_START}system\n{system_prompt}{IM_END}\n"
    text += f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n"
    if thinking_content:
        text += f"{THINK_START}\n{thinking_content}\n{THINK_END}\n\n"
    elif force_think_block:
        text += f"{THINK_START}\n\n{THINK_END}\n\n"
    return text + assistant_content
