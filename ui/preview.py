"""Under a generating tab's prompt: a one-line token meter and, folded, the exact chat text Z-Image
will read, both updated as the user types. Only the tokenizer loads (`llm_dit.preview`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from llm_dit.preview import preview_prompt
from llm_dit.request import GenerationRequest

TRIGGERS = ("prompt", "system_prompt", "thinking_content", "assistant_content", "force_think_block",
            "strip_quotes", "template", "long_prompt_mode")
WAITING = "Tokens: counted as you type, against the caption limit"

log = logging.getLogger(__name__)


@dataclass
class Preview:
    meter: gr.Markdown
    chat: gr.Code


def prompt_preview() -> Preview:
    """The meter and the folded chat text; build it right under the prompt, wire it with `wire`
    once every field of TRIGGERS exists (events may be wired after the layout)."""
    with gr.Column(elem_classes="prompt-preview"):
        meter = gr.Markdown(WAITING, elem_classes="token-meter")
        with gr.Accordion("Chat text Z-Image reads", open=False, elem_classes="chat-text"):
            chat = gr.Code(language=None, interactive=False, show_label=False, lines=4, max_lines=16)
    return Preview(meter, chat)


def wire(preview: Preview, c: dict, studio) -> None:
    """Update the preview on a change of any field that shapes the chat text."""
    manager, hosted = studio.manager, studio.hosted

    def preview_chat(*values):
        try:
            shown = preview_prompt(manager, GenerationRequest(**dict(zip(TRIGGERS, values))))
        except ValueError as err:
            return f"⚠ {err}", gr.skip()
        except LookupError as err:  # a hub id not downloaded yet: typing never starts a download
            return str(err), gr.skip()
        except (OSError, RuntimeError) as err:  # no tokenizer files: the meter says so, the app serves on
            log.warning("token meter: the tokenizer could not load: %s", err)
            return ("⚠ Token count unavailable: the tokenizer could not load" + ("." if hosted else f" ({err})."),
                    gr.skip())
        return shown.summary(), shown.chat

    gr.on([c[f].change for f in TRIGGERS], preview_chat, [c[f] for f in TRIGGERS], [preview.meter, preview.chat],
          api_name="preview_chat", api_visibility="private", queue=False, trigger_mode="always_last",
          show_progress="hidden")
