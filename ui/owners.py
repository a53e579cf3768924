"""Whose studies a hosted visitor sees: a random owner token the browser keeps (`gr.BrowserState`,
localStorage), noted for the page's session when it loads. A reload, or a new tab of the same
browser, keeps the token and so the visitor's studies; a token is 128 random bits drawn here, never
derived from anything a client sees, so no client can name another's. An API client that loads no
page owns what its own session started (its session hash), as before."""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict

import gradio as gr

from .history import BROWSER_KEY

STORAGE_KEY = "z-image-vl-studio-owner"
TOKEN = re.compile(r"[0-9a-f]{32}")
SESSIONS = 100_000  # the sessions remembered (oldest forgotten first): a bounded map


class Owners:
    def __init__(self):
        self._by_session: OrderedDict[str, str] = OrderedDict()

    def owner(self, session) -> str:
        """The owner of what this session starts or may see ("" without a session)."""
        hash_ = getattr(session, "session_hash", None) or ""
        return self._by_session.get(hash_, hash_)

    def note(self, session_hash: str, token) -> str:
        """The page's token (a new one when the browser has none, or a malformed one), noted for
        its session."""
        token = token if isinstance(token, str) and TOKEN.fullmatch(token) else secrets.token_hex(16)
        if session_hash:
            self._by_session[session_hash] = token
            self._by_session.move_to_end(session_hash)
            while len(self._by_session) > SESSIONS:
                self._by_session.popitem(last=False)
        return token

    def wire(self, demo: gr.Blocks) -> None:
        state = gr.BrowserState("", storage_key=STORAGE_KEY, secret=BROWSER_KEY)

        def owner_token(token, request: gr.Request):
            return self.note(request.session_hash, token)

        demo.load(owner_token, state, state, api_name="owner_token", api_visibility="private", queue=False)


OWNERS = Owners()
