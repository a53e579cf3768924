"""Budgets: how much one request may ask of the server, checked before the queue.

The operator sets them (flags; hosted defaults sized for a ZeroGPU Space, local ones generous);
every request is measured against them before it waits in the queue or takes the GPU slot, and a
refusal names the field, the value, the budget and what would fit. 0 means no budget.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

MEGAPIXEL = 2**20


def _mp(pixels: int) -> str:
    return f"{pixels / MEGAPIXEL:,.1f} MP"


def _square(pixels: int, multiple: int = 1) -> int:
    """The side of the largest square of at most `pixels` pixels, a multiple of `multiple`."""
    return int(math.isqrt(pixels)) // multiple * multiple


# the most files one upload request legitimately carries: the VL tab's references (one generation
# is conditioned on at most this many; a page uploads a multiple-file field's files in one request)
MAX_REFERENCES = 8
MULTIPART_SLACK = 2**20  # an upload request's form fields, part headers and boundaries

# what each kind of cell collection is called in messages, the field that sets its cell count, and how to shrink it
KINDS = {"sweep": ("cell_limit", "fewer values on an axis"),
         "study": ("study", "fewer references, axis values or seeds")}


@dataclass(frozen=True)
class Budgets:
    image_pixels: int = 0  # pixels of one image input (read from its header, before any decode)
    output_pixels: int = 0  # height × width of one output image
    steps: int = 0  # num_inference_steps
    cells: int = 0  # cells of one sweep or study
    work: int = 0  # megapixel-steps of one request: height × width / 2**20 × steps × cells
    body_bytes: int = 0  # one HTTP request body, inline data: URLs included
    # output pixels of one pipeline call: a sweep's or study's batch_size cells generated together
    # hold their latents and activations at once (peak memory grows with the batch)
    batch_pixels: int = 0
    upload_bytes: int = 0  # one upload request's whole body, all its files together
    # the bytes one client address may have uploaded within the upload cache's lifetime (gradio keeps
    # every upload that long): many small upload requests filled the disk at 175 MB/s
    client_upload_bytes: int = 0

    def describe(self) -> str:
        """One line for the status tab and the start-up log."""
        parts = [(self.image_pixels, f"image inputs up to {_mp(self.image_pixels)}"),
                 (self.output_pixels, f"outputs up to {_mp(self.output_pixels)}"),
                 (self.steps, f"up to {self.steps} steps"),
                 (self.cells, f"up to {self.cells} cells per sweep or study"),
                 (self.batch_pixels, f"batches up to {_mp(self.batch_pixels)} of output"),
                 (self.work, f"up to {self.work:,} megapixel-steps per request"),
                 (self.body_bytes, f"request bodies up to {self.body_bytes / 2**20:,.1f} MB"),
                 (self.upload_bytes, f"upload requests up to {self.upload_bytes / 2**20:,.1f} MB"),
                 (self.client_upload_bytes, f"uploads up to {self.client_upload_bytes / 2**20:,.0f} MB per client "
                                            f"while the upload cache keeps them")]
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

    def check_sweep(self, requests: list, batch_size: int = 1, kind: str = "sweep") -> None:
        """A sweep's or study's (`kind`) cells: their count, their work together, and the output
        pixels of its largest batch (`batch_size` cells of one size share one pipeline call)."""
        field, fewer = KINDS[kind]
        self.check_cells(len(requests), kind)
        work = sum(r.height * r.width / MEGAPIXEL * r.num_inference_steps for r in requests)
        if self.work and work > self.work:
            fits = int(len(requests) * self.work / work)
            use = f"cell_limit={fits} or fewer" if kind == "sweep" else f"{fits} cells or fewer ({fewer})"
            raise ValueError(f"{field}: this {kind}'s {len(requests)} cells are {work:,.0f} megapixel-steps of "
                             f"work, over this app's budget of {self.work:,} per request: use {use}, or fewer "
                             f"steps or pixels per cell.")
        self.check_batch(requests, batch_size, kind)

    def check_batch(self, requests: list, batch_size: int, kind: str = "sweep") -> None:
        """batch_size cells generated together: only cells of one size share a pipeline call, so
        the largest batch is, for each size, as many of its cells as batch_size allows."""
        if not self.batch_pixels or not requests:
            return
        sizes = Counter((r.width, r.height) for r in requests)
        (width, height), together = max(((size, min(int(batch_size), count)) for size, count in sizes.items()),
                                        key=lambda item: item[0][0] * item[0][1] * item[1])
        pixels = width * height * together
        if pixels <= self.batch_pixels:
            return
        fits = self.batch_pixels // (width * height)
        side = _square(self.batch_pixels, 16)
        use = f"batch_size={fits} or fewer, or smaller cells" if fits else f"cells of at most {side}×{side}"
        raise ValueError(f"batch_size={batch_size}: this {kind} would generate {together} cells of {width}×{height} "
                         f"together, {_mp(pixels)} of output per batch, over this app's budget of "
                         f"{_mp(self.batch_pixels)} ({self.batch_pixels:,} px) per batch: use {use}.")

    def check_cells(self, cells: int, kind: str = "sweep") -> None:
        if self.cells and cells > self.cells:
            field, fewer = KINDS[kind]
            limit = f", or cell_limit={self.cells}" if kind == "sweep" else f" ({self.cells} cells at most)"
            raise ValueError(f"{field}: this {kind} has {cells} cells, over this app's budget of {self.cells} "
                             f"cells per {kind}: use {fewer}{limit}.")


CLIENT_UPLOADS = 2  # hosted: full upload requests one client may have in the upload cache at once
# hosted: one batch may hold as many output pixels as one largest image (4 cells of 1024×1024)
HOSTED = Budgets(image_pixels=4096 * 4096, output_pixels=2048 * 2048, steps=50, cells=64, work=400,
                 batch_pixels=2048 * 2048)
LOCAL = Budgets(image_pixels=89_478_485)  # Pillow's own bomb warning threshold; the rest is the fields' ranges


def choose(hosted: bool, image_pixels: int = -1, output_pixels: int = -1, steps: int = -1, cells: int = -1,
           work: int = -1, body_bytes: int = 0, batch_pixels: int = -1, upload_file_bytes: int = 0) -> Budgets:
    """The budgets in force: each value the operator gave (-1 = the mode's default, 0 = none).
    Hosted, an upload request may carry `MAX_REFERENCES` files of `upload_file_bytes` (gradio caps
    each file; nothing else capped the files of one request together)."""
    default = HOSTED if hosted else LOCAL
    given = {"image_pixels": image_pixels, "output_pixels": output_pixels, "steps": steps, "cells": cells,
             "work": work, "batch_pixels": batch_pixels}
    values = {k: getattr(default, k) if v < 0 else v for k, v in given.items()}
    upload = upload_file_bytes * MAX_REFERENCES + MULTIPART_SLACK if hosted and upload_file_bytes else 0
    return Budgets(**values, body_bytes=body_bytes, upload_bytes=upload,
                   client_upload_bytes=CLIENT_UPLOADS * upload if hosted else 0)
