"""`gan repair`: fill the damaged regions of a clip with an exported repair generator.

The input is a frame folder or an animated GIF/WebP; the holes come from a folder of mask PNGs
(nonzero = hole, named like the frames: the DAVIS/E2FGVI convention) or are generated
(`--damage KIND --seed S`, then the input counts as the original and the preview shows it).
Pixels under the mask are zeroed before the model sees them, so they are never read as content.
Clips longer than the model's window go through overlapping windows; any frame size works.
"""

from __future__ import annotations

import json
from pathlib import Path

from gan.errors import GanError
from gan.sampling import CONDITION_FILE, resolve_export
from gan.weights import load_model_folder


def load_repair_generator(checkpoint: str | Path):
    """(generator, window, conditioner or None) from a run folder or generator/ of a video-repair run."""
    from gan.conditioning import Conditioner
    from gan.repair.models import RepairGenerator

    folder = resolve_export(checkpoint)
    spec = json.loads((folder / CONDITION_FILE).read_text())
    if spec.get("task") != "video-repair":
        raise GanError(f"--checkpoint {checkpoint}: a {spec.get('task', 'text-to-image')!r} model; gan repair needs "
                       f"one trained with task = 'video-repair' (e.g. configs/repair_moving_shapes.toml)")
    try:
        G = load_model_folder(RepairGenerator, folder, "repair generator").eval()
        window = int(spec["frames"])
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise GanError(f"{folder}: cannot load the repair generator: {e}") from None
    conditioner = Conditioner.from_export(folder, spec) if spec.get("modalities") else None
    return G, window, conditioner


def repair(checkpoint: str, input_path: str, out: str, *, mask: str | None = None, damage: str | None = None,
           seed: int = 0, device: str = "cpu", prompt: str | None = None, audio: str | None = None) -> dict:
    from gan.data.clips import read_clip, side_by_side, to_uint8, write_frames, write_gif
    from gan.data.damage import apply_damage, load_masks, make_mask, save_masks
    from gan.training.repair_steps import clip_condition, repair_clip

    if (mask is None) == (damage is None):
        raise GanError("give the holes either as --mask FOLDER (mask PNGs named like the frames) or as "
                       "--damage KIND --seed S")
    G, window, conditioner = load_repair_generator(checkpoint)
    G.to(device)
    cond = None
    if conditioner is not None:
        missing = [m for m, v in (("text", prompt), ("audio", audio)) if m in conditioner.modalities and not v]
        if len(missing) == len(conditioner.modalities):
            raise GanError(f"this repair model is conditioned on {conditioner.modalities}: pass "
                           + " and/or ".join("--prompt TEXT" if m == "text" else "--audio FILE" for m in missing))
        cond = clip_condition(conditioner, None, None, [prompt] if prompt else None, [audio] if audio else None)
    elif prompt or audio:
        raise GanError("this repair model was trained without a condition; drop --prompt/--audio")
    frames, names = read_clip(input_path)  # (T, 3, H, W) uint8
    T, _, H, W = frames.shape
    holes = load_masks(mask, names, (H, W)) if mask else make_mask(damage, T, (H, W), seed=seed)  # (T, H, W)
    x = frames.float() / 127.5 - 1
    damaged = apply_damage(x, holes)
    repaired = repair_clip(G, damaged, holes, window, device, cond)
    out_dir = Path(out)
    write_frames(to_uint8(repaired), out_dir, names)
    panels = [to_uint8(damaged), to_uint8(repaired)] + ([frames] if damage else [])
    write_gif(side_by_side(*panels), out_dir / "preview.gif", fps=8)
    if damage:
        save_masks(holes, out_dir / "masks", names)
    return {"frames": T, "size": [H, W], "window": window, "hole_share": holes.float().mean().item(),
            "preview": str(out_dir / "preview.gif"), "panels": "damaged | repaired" + (" | original" if damage else "")}
