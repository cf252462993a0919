"""One D step and one G step of the video-repair task, and the damage each batch gets.

The same Trainer runs it (checkpoints, EMA, logging, resume): only the data, the models and
these two steps differ from the image tasks. Damage is drawn per clip from the configured kinds
with a generator seeded by (seed, step, process, micro-step, sample), so a resumed run damages
the same clips the same way. Losses are the pure functions of gan.repair.losses.
"""

from __future__ import annotations

import numpy as np
import torch

from gan.data.damage import make_mask
from gan.repair import losses as rl


def damage_masks(kinds: list[str], batch: int, frames: int, size: int, *, seed: int, step: int, rank: int,
                 micro: int) -> torch.Tensor:
    """(B, T, 1, H, W) float masks, 1 = hole, reproducible from the arguments."""
    out = []
    for i in range(batch):
        rng = np.random.default_rng([seed, step, rank, micro, i])
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(make_mask(kind, frames, size, rng=rng))
    return torch.stack(out).unsqueeze(2).float()


def repair_discriminator_step(D, real, fake, mask, *, autocast):
    """Temporal PatchGAN hinge loss; real and repaired clips in ONE D call (one forward for DDP)."""
    b = real.shape[0]
    with autocast():
        logits = D(torch.cat([real, fake]), torch.cat([mask, mask])).float()  # (2B, T, h, w)
    real_logits, fake_logits = logits[:b], logits[b:]
    loss = rl.patch_hinge_d(real_logits, fake_logits)
    return loss, {"loss/d": loss.detach(), "d/real": real_logits.detach().mean(), "d/fake": fake_logits.detach().mean()}


def repair_generator_step(D, composite, raw, real, mask, *, hole_weight: float, valid_weight: float,
                          adv_weight: float, temporal_weight: float = 0.0, perceptual=None,
                          perceptual_weight: float = 0.0, autocast):
    """L1 on holes and on known pixels of the raw prediction, plus temporal_weight x the
    frame-difference L1 of the composite, plus adv_weight x hinge on the composite (D frozen and
    unwrapped by the caller), plus an optional perceptual term."""
    hole = rl.hole_l1(raw.float(), real, mask)
    valid = rl.valid_l1(raw.float(), real, mask)
    total = hole_weight * hole + valid_weight * valid
    stats = {"loss/hole_l1": hole.detach(), "loss/valid_l1": valid.detach()}
    if temporal_weight > 0:
        temporal = rl.temporal_l1(composite.float(), real)
        total = total + temporal_weight * temporal
        stats["loss/temporal"] = temporal.detach()
    if adv_weight > 0:
        with autocast():
            adv = rl.patch_hinge_g(D(composite, mask).float())
        total = total + adv_weight * adv
        stats["loss/adv"] = adv.detach()
    if perceptual is not None and perceptual_weight > 0:
        b, t = composite.shape[:2]
        p = perceptual(composite.float().flatten(0, 1), real.flatten(0, 1))  # frames as a batch
        total = total + perceptual_weight * p
        stats["loss/perceptual"] = p.detach()
    stats["loss/g"] = total.detach()
    return total, stats


def build_repair_models(cfg, cond_dim: int | None = None):
    from gan.repair.models import RepairGenerator, TemporalPatchDiscriminator

    m = cfg.model
    G = RepairGenerator(base_channels=m.g_channels, cond_dim=cond_dim, propagate=cfg.repair.propagate)
    D = TemporalPatchDiscriminator(base_channels=m.d_channels, max_channels=m.d_max_channels)
    return G, D


@torch.no_grad()
def repair_clip(G, frames: torch.Tensor, mask: torch.Tensor, window: int, device,
                cond: torch.Tensor | None = None) -> torch.Tensor:
    """Repair a clip of any length with a model trained on `window` frames.

    frames (T, 3, H, W) in [-1, 1], mask (T, H, W) bool -> (T, 3, H, W). Clips longer than the
    window go through overlapping windows (stride window // 2); each frame takes the average of
    the windows that cover it, so there is no seam in time. H and W are padded to a multiple of
    4 by reflection for the model and cropped back. `cond` (1, D): the clip's pooled condition
    for a model trained with repair.conditioned.
    """
    T, _, H, W = frames.shape
    ph, pw = (-H) % 4, (-W) % 4
    x = torch.nn.functional.pad(frames, (0, pw, 0, ph), mode="reflect") if ph or pw else frames
    m = torch.nn.functional.pad(mask[:, None].float(), (0, pw, 0, ph)) if ph or pw else mask[:, None].float()
    starts = [0] if T <= window else list(range(0, T - window + 1, max(1, window // 2)))
    if starts[-1] + window < T:
        starts.append(T - window)
    out = torch.zeros_like(x)
    count = torch.zeros(T, 1, 1, 1)
    G.eval()
    for s in starts:
        e = min(T, s + window)
        c = None if cond is None else cond.to(device)
        clip = G(x[None, s:e].to(device), m[None, s:e].to(device), c).float().cpu()[0]  # (t, 3, H', W')
        out[s:e] += clip
        count[s:e] += 1
    out = out / count
    return out[..., :H, :W]


def clip_condition(conditioner, row: dict, split, texts=None, audio=None) -> torch.Tensor | None:
    """(1, D) pooled condition of a clip: its row's caption/audio file, or the given ones."""
    if conditioner is None:
        return None
    from pathlib import Path

    inputs = {}
    if "text" in conditioner.modalities:
        inputs["texts"] = texts or ([row["text"]] if row else None)
    if "audio" in conditioner.modalities:
        inputs["audio"] = audio or ([str(Path(split) / row["audio_file"])] if row else None)
    return conditioner.encode(**inputs).pooled.float()  # float: accelerate may have made it autocast


def repair_preview(G, split, cfg, out_dir, step: int, device, clips: int = 4, conditioner=None) -> None:
    """damaged | repaired | original for the first clips of `split` under the fixed eval masks."""
    from pathlib import Path

    from gan.data.clips import read_clip, side_by_side, to_uint8, write_gif
    from gan.data.damage import apply_damage, fixed_eval_masks
    from gan.data.metadata import read_metadata

    split = Path(split)
    rows = read_metadata(split)[:clips]
    masks = fixed_eval_masks(len(rows), cfg.repair.frames, cfg.data.resolution)
    strips = []
    for row, (_, mask) in zip(rows, masks):
        frames, _ = read_clip(split / row["clip"], size=cfg.data.resolution)  # (T, 3, R, R) uint8
        frames = frames[: cfg.repair.frames].float() / 127.5 - 1
        mask = mask[: frames.shape[0]]
        cond = clip_condition(conditioner, row, split)
        repaired = repair_clip(G, frames, mask, cfg.repair.frames, device, cond)
        strips.append(side_by_side(to_uint8(apply_damage(frames, mask)), to_uint8(repaired), to_uint8(frames)))
    if not strips:
        return
    video = torch.cat(strips, dim=2)  # clips stacked vertically: (T, 3, clips*R, 3R+4)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_gif(video, out_dir / f"step-{step:07d}.gif", fps=4)


def repair_micro_step(trainer, batch, D_raw, autocast, micro: int) -> dict:
    """The Trainer's micro-step for task = "video-repair" (it owns models, optimisers and accelerator)."""
    cfg, acc, r = trainer.cfg, trainer.accelerator, trainer.cfg.repair
    real = batch["frames"].to(acc.device, non_blocking=True)  # (B, T, 3, H, W)
    real = real[:, : r.frames]
    cond = trainer._condition(batch["index"], None).pooled if trainer.conditioner is not None else None
    mask = damage_masks(r.damage, real.shape[0], real.shape[1], cfg.data.resolution, seed=cfg.train.seed,
                        step=trainer.step, rank=acc.process_index, micro=micro).to(acc.device)
    with autocast():
        composite, raw = trainer.G(real, mask, cond, return_raw=True)  # (B, T, 3, H, W) each
    trainer.D.requires_grad_(True)
    d_loss, stats = repair_discriminator_step(trainer.D, real, composite.detach().float(), mask, autocast=autocast)
    acc.backward(d_loss)
    trainer.optimizer_step("d", d_loss)  # through the non-finite guard (gan.training.guards)
    trainer.D.requires_grad_(False)
    g_loss, g_stats = repair_generator_step(
        D_raw, composite, raw, real, mask, hole_weight=r.hole_weight, valid_weight=r.valid_weight,
        adv_weight=r.adv_weight, temporal_weight=r.temporal_weight, perceptual=trainer.perceptual,
        perceptual_weight=r.perceptual_weight, autocast=autocast)
    acc.backward(g_loss)
    trainer.optimizer_step("g", g_loss)
    return {**stats, **g_stats}
