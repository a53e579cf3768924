"""Budgets: how much one request may ask of the server, checked before the queue.

The operator sets them (flags; hosted defaults sized for a ZeroGPU Space, local ones generous);
every request is measured against them before it waits in the queue or takes the GPU slot, and a
refusal names the field, the value, the budget and what would fit. 0 means no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEGAPIXEL = 2**20


def _mp(pixels: int) -> str:
    return f"{pixels / MEGAPIXEL:,.1f} MP"


def _square(pixels: int, multiple: int = 1) -> int:
    """The side of the largest square of at most `pixels` pixels, a multiple of `multiple`."""
    return int(math.isqrt(pixels)) // multiple * multiple


@dataclass(frozen=True)
class Budgets:
    image_pixels: int = 0  # pixels of one image input (read from its header, before any decode)
    output_pixels: int = 0  # height × width of one output image
    steps: int = 0  # num_inference_steps
    cells: int = 0  # cells of one sweep or study
    work: int = 0  # megapixel-steps of one request: height × width / 2**20 × steps × cells
    body_bytes: int = 0  # one HTTP request body, inline data: URLs included

    def describe(self) -> str:
        """One line for the status tab and the start-up log."""
        parts = [(self.image_pixels, f"image inputs up to {_mp(self.image_pixels)}"),
                 (self.output_pixels, f"outputs up to {_mp(self.output_pixels)}"),
                 (self.steps, f"up to {self.steps} steps"), (self.cells, f"up to {self.cells} cells per sweep"),
                 (self.work, f"up to {self.work:,} megapixel-steps per request"),
                 (self.body_bytes, f"request bodies up to {self.body_bytes / 2**20:,.1f} MB")]
        return "Budgets: " + (" · ".join(text for value, text in parts if value) or "none")

    def check_image(self, field: str, name: str, width: int, height: int) -> None:
        if self.image_pixels and width * height > self.image_pixels:
            side = _square(self.image_pixels)
            raise ValueError(f"{field}: {name} is {width}×{height} px ({_mp(width * height)}); this app takes at most "
                             f"{_mp(self.image_pixels)} ({self.image_pixels:,} px) per image input: downscale it "
                             f"(e.g. to {side}×{side}) and send it again.")

    def check_request(self, request, cells: int = 1) -> None:
        """A generation's size, steps and work (for a sweep, `cells` of them)."""
        height, width = getattr(request, "height", None), getattr(request, "width", None)
        steps = getattr(request, "num_inference_steps", None)
        if height is None or width is None or steps is None:
            return
        pixels = height * width
        if self.output_pixels and pixels > self.output_pixels:
            side = _square(self.output_pixels, 16)
            raise ValueError(f"height={height}, width={width}: {_mp(pixels)} per image is over this app's budget "
                             f"of {_mp(self.output_pixels)} ({self.output_pixels:,} px): use at most {side}×{side} "
                             f"or another size within it.")
        if self.steps and steps > self.steps:
            raise ValueError(f"num_inference_steps={steps} is over this app's budget of {self.steps} steps: use "
                             f"{self.steps} or fewer (Turbo needs 8).")
        self.check_cells(cells)
        work = pixels / MEGAPIXEL * steps * max(1, cells)
        if self.work and work > self.work:
            fits = int(self.work / (pixels / MEGAPIXEL * max(1, cells)))
            what = (f"at most {fits} steps at this size" if fits else "a smaller size") + (
                f" for {cells} cells, or fewer cells" if cells > 1 else "")
            raise ValueError(f"num_inference_steps={steps} at {width}×{height}"
                             + (f" over {cells} cells" if cells > 1 else "")
                             + f" is {work:,.0f} megapixel-steps of work, over this app's budget of {self.work:,} "
                             f"per request: use {what}.")

    def check_sweep(self, requests: list) -> None:
        """A sweep's or study's cells: their count, and their work together."""
        self.check_cells(len(requests))
        work = sum(r.height * r.width / MEGAPIXEL * r.num_inference_steps for r in requests)
        if self.work and work > self.work:
            fits = int(len(requests) * self.work / work)
            raise ValueError(f"cell_limit: this sweep's {len(requests)} cells are {work:,.0f} megapixel-steps of "
                             f"work, over this app's budget of {self.work:,} per request: use cell_limit={fits} "
                             f"or fewer, or fewer steps or pixels per cell.")

    def check_cells(self, cells: int) -> None:
        if self.cells and cells > self.cells:
            raise ValueError(f"cell_limit: this sweep has {cells} cells, over this app's budget of {self.cells} "
                             f"cells per sweep: use fewer values on an axis, or cell_limit={self.cells}.")


HOSTED = Budgets(image_pixels=4096 * 4096, output_pixels=2048 * 2048, steps=50, cells=64, work=400)
LOCAL = Budgets(image_pixels=89_478_485)  # Pillow's own bomb warning threshold; the rest is the fields' ranges


def choose(hosted: bool, image_pixels: int = -1, output_pixels: int = -1, steps: int = -1, cells: int = -1,
           work: int = -1, body_bytes: int = 0) -> Budgets:
    """The budgets in force: each value the operator gave (-1 = the mode's default, 0 = none)."""
    default = HOSTED if hosted else LOCAL
    given = {"image_pixels": image_pixels, "output_pixels": output_pixels, "steps": steps, "cells": cells,
             "work": work}
    values = {k: getattr(default, k) if v < 0 else v for k, v in given.items()}
    return Budgets(**values, body_bytes=body_bytes)
