"""Per-stage timing and memory of one generation (load, VL extract, offload, encode, denoise, decode)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import psutil
import torch


@dataclass
class Stage:
    name: str
    seconds: float
    rss_bytes: int  # process resident memory when the stage ended (max of before/after)
    cuda_peak_bytes: int | None  # CUDA allocator peak during the stage (None without a GPU)


@dataclass
class Timeline:
    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str):
        cuda = torch.cuda.is_initialized()  # never create a CUDA context just to measure
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        process = psutil.Process()
        rss_before = process.memory_info().rss
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append(Stage(
                name, round(time.perf_counter() - start, 4), max(rss_before, process.memory_info().rss),
                torch.cuda.max_memory_allocated() if cuda else None))

    def seconds(self) -> dict:
        totals: dict = {}
        for s in self.stages:
            totals[s.name] = round(totals.get(s.name, 0.0) + s.seconds, 4)
        return totals

    def to_list(self) -> list[dict]:
        return [asdict(s) for s in self.stages]
