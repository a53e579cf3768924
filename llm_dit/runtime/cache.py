"""A small LRU cache for embeddings (VL extractions, text encodings), partitioned by visitor.

Hosted, a visitor must not learn what another one asked for: a prompt or a reference someone else
sent came back from the cache in 0.2 ms instead of a fresh encode's 0.3-1 s. Whoever runs a job
for a visitor names its partition (`partition(name)`, a context like `llm_dit.serving.cancel`'s
scope); entries are found only within it. Locally every job is in one partition ("").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar

_partition: ContextVar[str] = ContextVar("llm_dit_cache_partition", default="")


@contextmanager
def partition(name: str):
    """Within this block (this thread's context), the caches find only entries put under `name`."""
    token = _partition.set(name or "")
    try:
        yield
    finally:
        _partition.reset(token)


class LRUCache:
    """A small thread-safe LRU map with hit/miss counters."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        key = (_partition.get(), key)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key, value) -> None:
        key = (_partition.get(), key)
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def stats(self) -> dict:
        return {"entries": len(self._items), "size": self.size, "hits": self.hits, "misses": self.misses}

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
