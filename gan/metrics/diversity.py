"""Within-prompt diversity on the built-in shapes data, measured from the pixels.

Real images of one caption vary in background level, shape position and size (the dataset's
jitter). A collapsed generator draws the same image for every noise vector. For a prompt we
measure each quantity on many generated images and on real images with the same attributes,
and report the ratio of standard deviations: ≈ 1 means the generator varies as the data
does, ≈ 0 means mode collapse.
"""

from __future__ import annotations

import torch


def shape_measurements(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 3, H, W) in [-1, 1] -> per image: background level (0..255), shape centre and side
    as fractions of the canvas. Shapes are bright (max channel ≥ 150), backgrounds dark (≤ 48)."""
    x = (images.float().clamp(-1, 1) + 1) * 127.5  # (N, 3, H, W)
    peak = x.amax(dim=1)  # (N, H, W)
    n, h, w = peak.shape
    bg_pixels = peak < 90
    bg = torch.stack([p[m].median() if m.any() else p.min() for p, m in zip(x.mean(1), bg_pixels)])
    # Soft coverage, so anti-aliased edges count by the fraction of the pixel the shape covers.
    top = peak.flatten(1).amax(1)[:, None, None]  # (N, 1, 1) the shape's brightest channel level
    mask = ((peak - bg[:, None, None]) / (top - bg[:, None, None]).clamp(min=1)).clamp(0, 1)
    mask = mask * (peak > bg[:, None, None] + 30)  # (N, H, W); ignore faint noise
    area = mask.sum((1, 2)).clamp(min=1)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    cy = (mask.sum(2) * ys).sum(1) / area
    cx = (mask.sum(1) * xs).sum(1) / area
    side = area.sqrt() / w  # relative side of an area-equivalent square
    return {"background": bg, "center_x": cx, "center_y": cy, "side": side}


def diversity_ratios(generated: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """std(generated) / std(real) for each measurement; both (N, 3, H, W) of ONE prompt."""
    g, r = shape_measurements(generated), shape_measurements(real)
    return {k: (g[k].std() / r[k].std().clamp(min=1e-6)).item() for k in g}
