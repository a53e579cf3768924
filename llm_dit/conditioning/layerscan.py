"""Per-layer statistics of a Qwen3-VL extraction: one forward, every hidden layer (issue 14 #9).

For each hidden state and each token type (image tokens, text tokens): the global std, the
correlation of the per-dimension std with the text encoder's profile at the text layer the DiT is
fed from, and the number of outlier dimensions. It shows which `vl_hidden_layer` looks most like
what the DiT was trained on (BRIEF §4: layer -2 image tokens carry outlier dims, -6 none).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import torch

from . import blend
from ..core.images import image_sha256, load_image
from .vl import ExtractionParams, build_inputs, cache_key, token_masks

COLUMNS = ("layer", "tokens", "count", "std", "std_correlation", "outlier_dims", "outlier_ratio", "std_ratio_raw")


def _rows_for(states, masks: dict, ref: blend.ReferenceStats, threshold: float) -> list[dict]:
    rows = []
    count = len(states)
    for index in range(count - 1, -1, -1):  # -1 (after the final norm) down to the embeddings
        layer = index - count
        for kind in ("image", "text"):
            x = states[index][0][masks[kind].to(states[index].device)].float().cpu()
            if x.shape[0] < 2:
                continue
            dim_std = x.std(dim=0, correction=0)
            corr = torch.corrcoef(torch.stack([dim_std, ref.std.float()]))[0, 1]
            ratio = blend.dim_std_ratio(x, ref)
            rows.append({"layer": layer, "tokens": kind, "count": int(x.shape[0]),
                         "std": round(float(x.std(correction=0)), 6),
                         "std_correlation": round(float(torch.nan_to_num(corr)), 4),
                         "outlier_dims": int((ratio > threshold).sum()),
                         # the widest dimension against the typical one (vs the text encoder's profile,
                         # what `outlier_dims` counts), and raw: max / min per-dim std, as the lab notes quote it
                         "outlier_ratio": round(float(ratio.max()), 4),
                         "std_ratio_raw": round(float(dim_std.max() / dim_std.min().clamp_min(1e-12)), 4)})
    return rows


def scan(manager, image, params: ExtractionParams, text_layer: int = -2, threshold: float = 10.0) -> list[dict]:
    """Rows (see COLUMNS) for every hidden layer of one VL forward on `image` + `params.text`.
    Cached by image, text, think block, system prompt, text layer and threshold: a repeated scan
    runs no model."""
    image = load_image(image, field="reference")
    params = replace(params, hidden_layer=-1, text_hidden_layer=0, token_mode="full")  # all layers, all tokens
    settings = manager.settings
    key = "scan:" + cache_key(image_sha256(image), params, manager.vl_model_id, settings.vl_min_pixels,
                              settings.vl_max_pixels) + f":{manager.zimage_model_id}:{text_layer}:{threshold}"
    hit = manager.vl_cache.get(key)
    if hit is not None:
        return [dict(row) for row in hit]
    ref = manager.reference_stats(text_layer)
    with manager.vl_model() as (model, processor), torch.no_grad():
        inputs = build_inputs(processor, image, params, settings.vl_min_pixels, settings.vl_max_pixels)
        device = next(model.parameters()).device
        out = model(**{k: v.to(device) for k, v in inputs.items()}, output_hidden_states=True, logits_to_keep=1)
        rows = _rows_for(out.hidden_states, token_masks(inputs["input_ids"], model.config), ref, threshold)
        del model, processor, out
    manager.vl_cache.put(key, rows)
    return [dict(row) for row in rows]


def best_layer(rows: list[dict], tokens: str = "image") -> int | None:
    """The layer whose `tokens` match the text encoder's per-dim profile best among those with the
    fewest outlier dimensions (None when there are no such rows)."""
    chosen = [r for r in rows if r["tokens"] == tokens and r["layer"] != -1]  # -1 is after the final norm
    if not chosen:
        return None
    fewest = min(r["outlier_dims"] for r in chosen)
    return max((r for r in chosen if r["outlier_dims"] == fewest), key=lambda r: r["std_correlation"])["layer"]


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
