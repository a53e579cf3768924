"""Under a generating tab's prompt: a one-line token meter and, folded, the exact chat text Z-Image
will read, both updated as the user types. Only the tokenizer loads (`llm_dit.pipelines.preview`)."""

from __future__ import annotations

import inspect
import itertools
import logging
from dataclasses import dataclass

import gradio as gr

from llm_dit.pipelines.preview import preview_prompt
from llm_dit.core.request import GenerationRequest

from .sessions import SessionTable

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

    def preview_chat(*values, session: gr.Request | None = None):
        ticket = NEWEST.begin(session)
        try:
            shown = preview_prompt(manager, GenerationRequest(**dict(zip(TRIGGERS, values))))
            reply = shown.summary(), shown.chat
        except ValueError as err:
            reply = f"⚠ {err}", gr.skip()
        except LookupError as err:  # a hub id not downloaded yet: typing never starts a download
            reply = str(err), gr.skip()
        except (OSError, RuntimeError) as err:  # no tokenizer files: the meter says so, the app serves on
            log.warning("token meter: the tokenizer could not load: %s", err)
            reply = ("⚠ Token count unavailable: the tokenizer could not load" + ("." if hosted else f" ({err})."),
                     gr.skip())
        return reply if NEWEST.is_newest(session, ticket) else (gr.skip(), gr.skip())

    # gradio passes the session to a parameter annotated gr.Request: name each field for it
    preview_chat.__signature__ = inspect.Signature(
        [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD) for f in TRIGGERS]
        + [inspect.Parameter("session", inspect.Parameter.KEYWORD_ONLY, annotation=gr.Request, default=None)])
    # Unqueued (typing must not wait behind GPU jobs or fill the queue), so every change is its own
    # request and the page shows whichever reply lands last: NEWEST skips a reply that a newer
    # request of the same page has overtaken.
    gr.on([c[f].change for f in TRIGGERS], preview_chat, [c[f] for f in TRIGGERS], [preview.meter, preview.chat],
          api_name="preview_chat", api_visibility="private", queue=False, trigger_mode="always_last",
          show_progress="hidden")


class Newest:
    """Numbers each page's requests as they arrive; `is_newest` says whether a reply is still the
    newest of its page's (a page's older, slower request must not overwrite a newer one's reply)."""

    def __init__(self, sessions: int = 1024):
        self._latest = SessionTable(sessions)
        self._count = itertools.count(1)

    def begin(self, session) -> int:
        return self._latest.update(getattr(session, "session_hash", None) or "", lambda _: next(self._count), 0)

    def is_newest(self, session, ticket: int) -> bool:
        return self._latest.get(getattr(session, "session_hash", None) or "", ticket) == ticket


NEWEST = Newest()
