""""Stop after this cell" for sweeps, per browser session, ordered by the browser's own clock.

Run and Stop reach the server as separate requests, which it may handle in either order (a Stop
pressed right after Run can be handled first). Each click therefore carries the page's
`Date.now()` as it happened: a Stop counts for every sweep whose Run was clicked before it,
whichever request the server sees first, and never for a sweep clicked after it.
"""

from __future__ import annotations

import math

from .sessions import SessionTable

CLICK_TIME_JS = "() => Date.now()"  # what Run's and Stop's private events send
SESSIONS = 4096  # sessions remembered, the least recently clicked forgotten first


def _time(at) -> float:
    try:
        at = float(at)
    except (TypeError, ValueError, OverflowError):  # a client's odd value: a time before any other
        return 0.0
    return at if math.isfinite(at) else 0.0


class Stops:
    """One record per session, [latest Run click, latest Stop click]. A session forgotten (a client
    inventing session ids pushed it out) loses both together: its sweep then runs on, and a
    Stop pressed after that still counts; an old Stop never outlives its Run."""

    def __init__(self, sessions: int = SESSIONS):
        self._clicks = SessionTable(sessions)

    def _note(self, session: str, which: int, at) -> None:
        at = _time(at)

        def change(record):
            record = list(record)
            record[which] = at if record[which] is None else max(at, record[which])
            return record

        self._clicks.update(session, change, (-math.inf, None))

    def run_clicked(self, session: str, at) -> None:
        self._note(session, 0, at)

    def stop_clicked(self, session: str, at) -> None:
        self._note(session, 1, at)

    def started(self, session: str | None) -> float:
        """When the sweep starting now was clicked (its session's latest Run; -inf over the API)."""
        return self._clicks.get(session, (-math.inf, None))[0] if session else -math.inf

    def stopped(self, session: str | None, since: float) -> bool:
        """Whether Stop was clicked at or after `since` (a sweep's `started`)."""
        stop = self._clicks.get(session, (-math.inf, None))[1] if session else None
        return stop is not None and stop >= since
