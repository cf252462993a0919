"""Evaluation of a video-repair model against the two baselines, on one fixed set of masks.

Every test clip gets the mask of `gan.data.damage.fixed_eval_masks` (the kinds in turn, the same
masks for every model and every run), and the model, per-frame OpenCV Telea inpainting and
"copy the nearest frame where the pixel is visible" repair it. The table holds each method's
mean PSNR/SSIM on the whole frame and inside the holes, and the temporal error (frame-to-frame
differences against the ground truth's), so the baselines are computed by the same command.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gan.errors import GanError

REPAIR_METRICS = ("psnr", "ssim", "hole_psnr", "hole_ssim", "temporal")
# "vfid": Frechet distance of features from a video classifier trained on the built-in clips
# (gan.metrics.video_classifier), repaired vs original clips: an OFFLINE ANALOGUE of the papers'
# I3D-based VFID, not comparable with their numbers.
METHODS = ("model", "telea", "nearest_visible")


def evaluate_repair(checkpoint: str, split: str | Path, *, num: int = 0, seed: int = 1234, device="cpu",
                    baselines: bool = True, progress: bool = True, vfid: bool = False) -> dict:
    """{"per_method": {method: {metric: mean}}, "per_kind": {...}, "clips": n, ...}."""
    from gan.data.clips import read_clip, to_uint8
    from gan.data.damage import apply_damage, fixed_eval_masks
    from gan.data.metadata import read_metadata
    from gan.repair.baselines import nearest_visible, telea
    from gan.repair.metrics import repair_metrics
    from gan.repair.run import load_repair_generator
    from gan.training.repair_steps import clip_condition, repair_clip

    split = Path(split)
    if not (split / "metadata.jsonl").is_file():
        raise GanError(f"--data {split}: expected a clip split with metadata.jsonl (e.g. datasets/moving_shapes/test)")
    rows = read_metadata(split)
    if any("clip" not in r for r in rows):
        raise GanError(f"{split}/metadata.jsonl: rows need a 'clip' folder name (gan data moving-shapes layout)")
    rows = rows[:num] if num else rows
    G, window, conditioner = load_repair_generator(checkpoint)
    G.to(device)
    first, _ = read_clip(split / rows[0]["clip"])
    masks = fixed_eval_masks(len(rows), first.shape[0], tuple(first.shape[-2:]), seed=seed)
    methods = METHODS if baselines else METHODS[:1]
    scores = {m: [] for m in methods}
    kinds = []
    seconds = dict.fromkeys(methods, 0.0)
    clips = {"real": [], **{m: [] for m in methods}} if vfid else None
    for row, (kind, holes) in tqdm(list(zip(rows, masks)), desc="repair eval", disable=not progress):
        frames, _ = read_clip(split / row["clip"])  # (T, 3, H, W) uint8
        if frames.shape != first.shape:
            raise GanError(f"{split / row['clip']}: clip of shape {tuple(frames.shape)}, the first was "
                           f"{tuple(first.shape)}; the evaluation set needs one clip shape")
        kinds.append(kind)
        for m in methods:
            t0 = time.time()
            if m == "model":
                x = apply_damage(frames.float() / 127.5 - 1, holes)
                cond = clip_condition(conditioner, row, split)
                out = to_uint8(repair_clip(G, x, holes, window, device, cond))
            else:
                out = (telea if m == "telea" else nearest_visible)(frames, holes)
            seconds[m] += time.time() - t0
            scores[m].append(repair_metrics(out, frames, holes))
            if clips is not None:
                clips[m].append(out)
        if clips is not None:
            clips["real"].append(frames)
    per_method = {m: _means(v) for m, v in scores.items()}
    if clips is not None:
        from gan.metrics.video_classifier import load_or_train_video_classifier, vfid as frechet

        classifier, accuracy = load_or_train_video_classifier(split.parent, resolution=first.shape[-1],
                                                              frames=first.shape[0], progress=progress)
        real = torch.stack(clips["real"])
        for m in methods:
            per_method[m]["vfid"] = frechet(classifier, real, torch.stack(clips[m]))
        per_method["video_classifier_test_accuracy"] = accuracy
    return {"per_method": per_method,
            "per_kind": {m: {k: _means([s for s, kk in zip(v, kinds) if kk == k]) for k in sorted(set(kinds))}
                         for m, v in scores.items()},
            "clips": len(rows), "window": window, "mask_seed": seed, "seconds": {m: round(s, 1) for m, s in seconds.items()}}


def _means(scores: list[dict]) -> dict:
    """Mean of each metric over clips, ignoring NaN (e.g. hole metrics of a clip without holes)."""
    out = {}
    for k in REPAIR_METRICS:
        vals = torch.tensor([s[k] for s in scores], dtype=torch.float64)
        vals = vals[~vals.isnan()]
        out[k] = vals.mean().item() if len(vals) else float("nan")
    return out
