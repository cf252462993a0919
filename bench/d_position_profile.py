"""What a trained text-to-image D thinks of WHERE a shape is: its mean logit for real shapes drawn at
controlled offsets from their anchor position (the data jitters each coordinate by up to ±0.05 of the
canvas). A flat profile means D gives G no reason to reproduce the jitter.

    python bench/d_position_profile.py --run runs/t2i_shapes            # latest checkpoint
    python bench/d_position_profile.py --run runs/t2i_shapes --step 2000 --max-offset 0.1 --draws 8

Prints a markdown table: offset | mean logit with the offset on x | on y (5 prompts × `draws` shapes
per offset, background, size and colour drawn as in the data, the other axis jittered as in the data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.data.shapes import (BACKGROUND_MAX, COLOR_JITTER, COLORS, POSITION_JITTER, POSITIONS, SIZE_JITTER,  # noqa: E402
                             SIZES, _coverage)

PROMPTS = [({"color": "red", "shape": "circle", "size": "small", "position": "top left"},
            "a small red circle in the top left"),
           ({"color": "blue", "shape": "square", "size": "large", "position": "bottom right"},
            "a large blue square in the bottom right"),
           ({"color": "yellow", "shape": "triangle", "size": "small", "position": "center"},
            "a small yellow triangle in the center"),
           ({"color": "green", "shape": "circle", "size": "large", "position": "top right"},
            "a large green circle in the top right"),
           ({"color": "white", "shape": "square", "size": "small", "position": "bottom left"},
            "a small white square in the bottom left")]


def shifted_shapes(attrs: dict, offset: float, axis: str, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """n images (n, 3, size, size) in [-1, 1] of `attrs`, the shape's centre `offset` (fraction of the
    canvas) from its anchor on `axis`; everything else drawn as gan.data.shapes.render draws it."""
    fx, fy = POSITIONS[attrs["position"]]
    out = []
    for _ in range(n):
        bg = int(rng.integers(0, BACKGROUND_MAX + 1))
        rgb = np.clip(np.array(COLORS[attrs["color"]]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
        side = SIZES[attrs["size"]] * size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
        other = rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        cx, cy = (fx + offset, fy + other) if axis == "x" else (fx + other, fy + offset)
        cov = _coverage(attrs["shape"], cx * size, cy * size, side, size, 8)[..., None]  # (H, W, 1)
        pixels = np.rint(bg + cov * (rgb.astype(np.float64) - bg))  # (H, W, 3)
        out.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a text-to-image run folder (config.toml, checkpoint-N/, generator/)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--max-offset", type=float, default=0.1, help="largest offset, fraction of the canvas")
    ap.add_argument("--points", type=int, default=11, help="offsets from -max to +max")
    ap.add_argument("--draws", type=int, default=8, help="shapes per prompt and offset")
    args = ap.parse_args(argv)
    from safetensors.torch import load_file

    from gan.conditioning import Conditioner, read_condition_spec
    from gan.config import load_config
    from gan.sampling import resolve_export
    from gan.training.trainer import build_models

    run = Path(args.run)
    steps = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    if not steps:
        raise SystemExit(f"{run}: no checkpoint-N folders")
    step = args.step if args.step is not None else steps[-1]
    cfg = load_config(run / "config.toml", [])
    if cfg.task != "text-to-image" or cfg.model.pack != 1:
        raise SystemExit(f"{run}: a text-to-image run whose D judges single images is needed "
                         f"(task {cfg.task!r}, model.pack {cfg.model.pack})")
    folder = resolve_export(run)
    conditioner = Conditioner.from_export(folder, read_condition_spec(folder))
    pooled = conditioner.encode(texts=[t for _, t in PROMPTS]).pooled.float()  # (P, D)
    tokens = conditioner.encode(texts=[PROMPTS[0][1]]).tokens
    _, D = build_models(cfg, pooled.shape[1], None if tokens is None else tokens.shape[-1])
    D.load_state_dict(load_file(str(run / f"checkpoint-{step}" / "model_1.safetensors")))
    D.eval()
    size = cfg.data.resolution
    offsets = np.linspace(-args.max_offset, args.max_offset, args.points)
    rng = np.random.default_rng(0)
    table = {}
    for axis in ("x", "y"):
        for k, (attrs, _) in enumerate(PROMPTS):
            for j, off in enumerate(offsets):
                x = shifted_shapes(attrs, float(off), axis, args.draws, size, rng)
                with torch.no_grad():
                    logit = D(x, pooled[k:k + 1].expand(len(x), -1)).mean().item()
                table[axis, j] = table.get((axis, j), 0.0) + logit / len(PROMPTS)
    print(f"D of {run} at step {step}: mean logit of real shapes offset from their anchor "
          f"(data jitter ±{POSITION_JITTER})\n")
    print("| offset | offset on x | offset on y |\n| --- | --- | --- |")
    for j, off in enumerate(offsets):
        print(f"| {off:+.3f} | {table['x', j]:.3f} | {table['y', j]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
