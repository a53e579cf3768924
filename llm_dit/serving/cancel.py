"""Cancellation: a job learns that its client went away and stops at the next step.

Whoever runs a job on a client's behalf (the web app's handlers) sets a stop event for the thread
that runs it with `scope(event)`; the denoise loop (at each step), a sweep (between cells) and a
local rewrite (at each token) ask `requested()`. A stopped job raises `Cancelled` and saves nothing.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar

_stop: ContextVar[threading.Event | None] = ContextVar("llm_dit_stop", default=None)


class Cancelled(Exception):
    """The client cancelled or disconnected: the job stopped and kept nothing."""


@contextmanager
def scope(event: threading.Event):
    token = _stop.set(event)
    try:
        yield event
    finally:
        _stop.reset(token)


def current() -> threading.Event | None:
    """This thread's stop event (to hand to a worker thread), or None outside any scope."""
    return _stop.get()


def requested() -> bool:
    event = _stop.get()
    return event is not None and event.is_set()


def check() -> None:
    if requested():
        raise Cancelled("the request was cancelled: nothing was saved.")
