"""One discriminator step and one generator step for conditional image GANs, and the Trainer's
micro-step that runs them (`image_micro_step`, as joint_steps and repair_steps have theirs).

These wire models to the pure loss functions in `gan.losses`; the trainer only decides when
to call them, under which gradient-accumulation context, and what to log.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gan import losses
from gan.augment import diff_augment


@dataclass
class Condition:
    pooled: torch.Tensor  # (B, D) sentence embedding
    tokens: torch.Tensor | None  # (B, L, Dt) word features, None when G does not attend to words
    mask: torch.Tensor | None  # (B, L) bool, True = real token

    def detached(self) -> "Condition":
        return Condition(self.pooled.detach(), None if self.tokens is None else self.tokens.detach(), self.mask)

    def subset(self, k: int) -> "Condition":
        return Condition(self.pooled[:k], None if self.tokens is None else self.tokens[:k],
                         None if self.mask is None else self.mask[:k])

    def mismatched(self, shift: int = 1) -> torch.Tensor:
        # Each real image is paired with a neighbour's caption; with attribute-grouped batches
        # the shift is the group size, so the neighbour is from another group (other attributes).
        return self.pooled.roll(shift, dims=0)


def _augment(x: torch.Tensor, policy: str, group: int = 1) -> torch.Tensor:
    return diff_augment(x, policy, group=group) if policy else x


def pack_rows(x: torch.Tensor, pack: int) -> torch.Tensor:
    """(B, C, H, W) -> (B/pack, pack*C, H, W): each run of `pack` consecutive rows stacked on the
    channels (PacGAN), so D judges them together and can see when they are too alike."""
    if pack == 1:
        return x
    b, c, h, w = x.shape
    if b % pack:
        raise ValueError(f"pack_rows: batch {b} is not a multiple of the pack size {pack}")
    return x.reshape(b // pack, pack * c, h, w)


def discriminator_step(D, real, fake, cond: Condition, *, kind: str, mismatch_weight: float,
                       gp: str, gp_weight: float, apply_gp: bool, augment: str, autocast, mismatch_shift: int = 1,
                       augment_group: int = 1, pack: int = 1):
    """Loss for D on a batch; returns (loss, stats). `fake` must already be detached.

    Real and fake images go through D in ONE forward call, which also scores the real images
    against mismatched captions from the same features: DistributedDataParallel expects one
    forward per backward, and the gradient penalty needs that same graph. With pack > 1, D scores
    runs of `pack` rows (one attribute set, so one caption: the run's first) as one sample.
    """
    pooled = cond.pooled
    if apply_gp and gp != "none":
        real = real.detach().requires_grad_(True)
        pooled = pooled.detach().requires_grad_(gp == "ma_gp")
    real_in = pack_rows(_augment(real, augment, augment_group), pack)  # (B/p, 3p, R, R)
    images = torch.cat([real_in, pack_rows(_augment(fake, augment, augment_group), pack)])  # (2B/p, 3p, R, R)
    b = real_in.shape[0]
    pooled_in = pooled[::pack]  # (B/p, D)
    conds = torch.cat([pooled_in, pooled_in])  # (2B/p, D)
    use_mismatch = mismatch_weight > 0
    with autocast():
        if use_mismatch:
            # The fakes' mismatch scores are a by-product (the head is a dot product) and unused.
            logits, mismatch = D(images, conds, torch.cat([cond.mismatched(mismatch_shift)[::pack], pooled_in]))
            mismatch_logits = mismatch[:b].float()
        else:
            logits, mismatch_logits = D(images, conds), None
    logits = logits.float()
    real_logits, fake_logits = logits[:b], logits[b:]
    d_loss = losses.D_LOSSES[kind](real_logits, fake_logits, mismatch_logits, mismatch_weight)
    stats = {"loss/d": d_loss.detach(), "d/real": real_logits.detach().mean(),
             "d/fake": fake_logits.detach().mean()}
    if mismatch_logits is not None:
        stats["d/mismatch"] = mismatch_logits.detach().mean()
    total = d_loss
    if apply_gp and gp == "ma_gp":
        penalty = losses.matching_aware_gp(real_logits, real, pooled_in, k=gp_weight)  # (config: not with pack)
        stats["loss/gp"] = penalty.detach()
        total = total + penalty
    elif apply_gp and gp == "r1":
        # r1_penalty averages over image rows; a packed sample's squared norm is its rows' sum
        penalty = gp_weight * pack * losses.r1_penalty(real_logits, real)
        stats["loss/gp"] = penalty.detach()
        total = total + penalty
    return total, stats


def generator_step(D, fake, cond: Condition, *, kind: str, augment: str, autocast, augment_group: int = 1,
                   pack: int = 1):
    """Loss for G: D (frozen by the caller, and unwrapped from DDP) scores the fakes (packed as in D's step)."""
    with autocast():
        logits = D(pack_rows(_augment(fake, augment, augment_group), pack), cond.pooled[::pack]).float()
    g_loss = losses.G_LOSSES[kind](logits)
    return g_loss, {"loss/g": g_loss.detach()}


def mode_seeking_step(G, fake, z, cond: Condition, *, fraction: float, autocast):
    """MSGAN term: a second noise draw for the first k conditions must give other images."""
    k = max(1, int(fake.shape[0] * fraction))
    z_b = torch.randn(k, z.shape[1], device=z.device)
    part = cond.subset(k)
    with autocast():
        fake_b = G(z_b, part.pooled, part.tokens, part.mask)
    loss = losses.mode_seeking(fake[:k], fake_b, z[:k], z_b)
    return loss, {"loss/mode_seeking": loss.detach()}


def _grad_norm(model) -> float:
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def image_micro_step(trainer, batch, D_raw, autocast, micro: int = 0) -> dict:
    """The Trainer's micro-step for the image tasks (it owns models, optimisers and accelerator)."""
    cfg, acc, l = trainer.cfg, trainer.accelerator, trainer.cfg.loss
    real = batch["image"].to(acc.device, non_blocking=True)
    if cfg.train.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    index = batch["index"]
    cond = trainer._condition(index, real)
    g_cond = cond.detached() if trainer.conditioner.trainable else cond
    z = torch.randn(real.shape[0], cfg.model.z_dim, device=acc.device)
    with autocast():
        fake = trainer.G(z, g_cond.pooled, g_cond.tokens, g_cond.mask)  # (B, 3, R, R)

    trainer.D.requires_grad_(True)
    apply_gp = l.gp != "none" and (trainer.step % l.gp_every == 0)
    pack = cfg.model.pack
    # a pack's rows share their augmentation, so D compares the images, not their transforms
    aug_group = cfg.model.mbstd_group if l.diffaugment_per_group else pack
    d_loss, stats = discriminator_step(
        trainer.D, real, fake.detach(), cond, kind=l.kind, mismatch_weight=l.mismatch_weight, gp=l.gp,
        gp_weight=l.gp_weight * l.gp_every, apply_gp=apply_gp, augment=l.diffaugment, autocast=autocast,
        mismatch_shift=max(1, cfg.data.attribute_groups), augment_group=aug_group, pack=pack)
    acc.backward(d_loss)
    log_now = acc.sync_gradients and (trainer.step + 1) % cfg.train.log_every == 0
    if log_now:
        stats["grad_norm/d"] = _grad_norm(trainer.D)
    trainer.optimizer_step("d", d_loss)

    trainer.D.requires_grad_(False)  # G's loss must not leave gradients in D
    g_loss, g_stats = generator_step(D_raw, fake, g_cond, kind=l.kind, augment=l.diffaugment, autocast=autocast,
                                     augment_group=aug_group, pack=pack)
    if l.mode_seeking_weight > 0:
        ms, ms_stats = mode_seeking_step(trainer.G, fake, z, g_cond, fraction=l.mode_seeking_fraction,
                                         autocast=autocast)
        g_loss, g_stats = g_loss + l.mode_seeking_weight * ms, {**g_stats, **ms_stats}
    acc.backward(g_loss)
    if log_now:
        g_stats["grad_norm/g"] = _grad_norm(trainer.G)
    trainer.optimizer_step("g", g_loss)
    return {**stats, **g_stats}
