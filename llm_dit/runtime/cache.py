"""A small LRU cache for embeddings (VL extractions, text encodings)."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LRUCache:
    """A small thread-safe LRU map with hit/miss counters."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key, value) -> None:
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
