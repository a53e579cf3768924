""""Stop after this cell" for sweeps, per browser session, ordered by the browser's own clock.

Run and Stop reach the server as separate requests, which it may handle in either order (a Stop
pressed right after Run can be handled first). Each click therefore carries the page's
`Date.now()` as it happened: a Stop counts for every sweep whose Run was clicked before it,
whichever request the server sees first, and never for a sweep clicked after it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

CLICK_TIME_JS = "() => Date.now()"  # what Run's and Stop's private events send
SESSIONS = 1024  # sessions remembered; a client inventing session ids evicts only the oldest


class Stops:
    def __init__(self, sessions: int = SESSIONS):
        self._runs: OrderedDict[str, float] = OrderedDict()  # session -> its latest Run click
        self._stops: OrderedDict[str, float] = OrderedDict()  # session -> its latest Stop click
        self._sessions = sessions
        self._lock = threading.Lock()

    def _note(self, table: OrderedDict, session: str, at) -> None:
        at = float(at) if isinstance(at, (int, float)) and math.isfinite(at) else 0.0
        with self._lock:
            table[session] = max(at, table.pop(session, at))
            while len(table) > self._sessions:
                table.popitem(last=False)

    def run_clicked(self, session: str, at) -> None:
        self._note(self._runs, session, at)

    def stop_clicked(self, session: str, at) -> None:
        self._note(self._stops, session, at)

    def started(self, session: str | None) -> float:
        """When the sweep starting now was clicked (its session's latest Run; -inf over the API)."""
        with self._lock:
            return self._runs.get(session, -math.inf) if session else -math.inf

    def stopped(self, session: str | None, since: float) -> bool:
        """Whether Stop was clicked at or after `since` (a sweep's `started`)."""
        with self._lock:
            stop = self._stops.get(session) if session else None
            return stop is not None and stop >= since
