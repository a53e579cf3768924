"""Chat strings match BRIEF §2 exactly, for every combination of prompt parts."""

import itertools

import pytest

from llm_dit.core.prompt import format_chat

DEFAULT = "<|im_start|>user\nA cat<|im_end|>\n<|im_start|>assistant\n"


def test_default_is_the_official_demo_format():
    assert format_chat("A cat") == DEFAULT


def test_full_form():
    text = format_chat("A cat", system_prompt="Be vivid.", thinking_content="Fur, light.",
                       assistant_content="Here it is.")
    assert text == (
        "<|im_start|>system\nBe vivid.<|im_end|>\n"
        "<|im_start|>user\nA cat<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nFur, light.\n</think>\n\nHere it is."
    )


def test_empty_think_block_is_exact():
    assert format_chat("A cat", force_think_block=True) == DEFAULT + "<think>\n\n</think>\n\n"


@pytest.mark.parametrize(
    "system,thinking,assistant,force",
    list(itertools.product(["", "S"], ["", "T"], ["", "A"], [False, True])),
)
def test_every_combination(system, thinking, assistant, force):
    expected = ""
    if system:
        expected += f"<|im_start|>system\n{system}<|im_end|>\n"
    expected += "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n"
    if thinking:
        expected += f"<think>\n{thinking}\n</think>\n\n"
    elif force:
        expected += "<think>\n\n</think>\n\n"
    expected += assistant
    assert format_chat("P", system, thinking, assistant, force) == expected


def test_strip_quotes_touches_only_the_prompt():
    text = format_chat('a sign saying "hello"', system_prompt='say "x"', strip_quotes=True)
    assert "a sign saying hello" in text
    assert 'say "x"' in text
    assert '"hello"' in format_chat('a sign saying "hello"')


def test_matches_the_tokenizer_chat_template(manager):
    """Our default equals Qwen3's template with enable_thinking=True (what diffusers uses), and
    force_think_block equals enable_thinking=False."""
    tokenizer = manager.pipeline().tokenizer
    messages = [{"role": "user", "content": "A cat"}]
    on = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    off = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert format_chat("A cat") == on
    assert format_chat("A cat", force_think_block=True) == off
