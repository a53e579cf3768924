"""A small bounded record per browser session, for state kept between a page's requests (the
stop clicks of a sweep, the newest token-meter request). Session ids come from the client: keys
are hashed (a client picks their length) and the least recently touched session is forgotten
first, so invented ids cannot grow the table."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


class SessionTable:
    def __init__(self, sessions: int):
        self._rows: OrderedDict[bytes, object] = OrderedDict()
        self._sessions = sessions
        self._lock = threading.Lock()

    @staticmethod
    def _key(session: str) -> bytes:
        return hashlib.sha256(session.encode("utf-8", "replace")).digest()

    def update(self, session: str, change, default):
        """Store and return `change(current or default)` as this session's record (now the newest)."""
        key = self._key(session)
        with self._lock:
            value = self._rows[key] = change(self._rows.pop(key, default))
            while len(self._rows) > self._sessions:
                self._rows.popitem(last=False)
        return value

    def get(self, session: str, default=None):
        with self._lock:
            return self._rows.get(self._key(session), default)
