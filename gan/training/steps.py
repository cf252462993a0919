"""One discriminator step and one generator step for conditional image GANs.

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

    def mismatched(self) -> torch.Tensor:
        # Shift by one: each real image is paired with its neighbour's caption.
        return self.pooled.roll(1, dims=0)


def _augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    return diff_augment(x, policy) if policy else x


def discriminator_step(D, real, fake, cond: Condition, *, kind: str, mismatch_weight: float,
                       gp: str, gp_weight: float, apply_gp: bool, augment: str, autocast):
    """Loss for D on a batch; returns (loss, stats). `fake` must already be detached.

    Real and fake images go through D in ONE forward call, which also scores the real images
    against mismatched captions from the same features: DistributedDataParallel expects one
    forward per backward, and the gradient penalty needs that same graph.
    """
    b = real.shape[0]
    pooled = cond.pooled
    if apply_gp and gp != "none":
        real = real.detach().requires_grad_(True)
        pooled = pooled.detach().requires_grad_(gp == "ma_gp")
    images = torch.cat([_augment(real, augment), _augment(fake, augment)])  # (2B, 3, R, R)
    conds = torch.cat([pooled, pooled])  # (2B, D)
    use_mismatch = mismatch_weight > 0
    with autocast():
        if use_mismatch:
            # The fakes' mismatch scores are a by-product (the head is a dot product) and unused.
            logits, mismatch = D(images, conds, torch.cat([cond.mismatched(), pooled]))
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
        penalty = losses.matching_aware_gp(real_logits, real, pooled, k=gp_weight)
        stats["loss/gp"] = penalty.detach()
        total = total + penalty
    elif apply_gp and gp == "r1":
        penalty = gp_weight * losses.r1_penalty(real_logits, real)
        stats["loss/gp"] = penalty.detach()
        total = total + penalty
    return total, stats


def generator_step(D, fake, cond: Condition, *, kind: str, augment: str, autocast):
    """Loss for G: D (frozen by the caller, and unwrapped from DDP) scores the fakes."""
    with autocast():
        logits = D(_augment(fake, augment), cond.pooled).float()
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
