"""GAN losses and gradient penalties, as pure functions of logits (and inputs for penalties).

Discriminator losses take up to three groups of logits:
- real:     D(real image, its own condition)         -> pushed up
- fake:     D(generated image, the condition it got) -> pushed down
- mismatch: D(real image, another sample's condition) -> pushed down (matching-aware term)

With mismatch logits, the two "fake" kinds share one unit of weight as in DF-GAN:
    loss = real_term + (1 - mismatch_weight) * fake_term + mismatch_weight * mismatch_term
so the default mismatch_weight = 0.5 gives real + (fake + mismatch) / 2. Without mismatch
logits: loss = real_term + fake_term.

All losses are computed in float32 (logits may arrive in bf16 under autocast) and returned
as 0-d tensors.
"""

import torch
import torch.nn.functional as F


def _combine(real_term, fake_term, mismatch_term, mismatch_weight: float) -> torch.Tensor:
    if mismatch_term is None:
        return real_term + fake_term
    if not 0.0 <= mismatch_weight <= 1.0:
        raise ValueError(f"mismatch_weight must lie in [0, 1], got {mismatch_weight}")
    return real_term + (1.0 - mismatch_weight) * fake_term + mismatch_weight * mismatch_term


def d_hinge(real_logits, fake_logits, mismatch_logits=None, mismatch_weight: float = 0.5) -> torch.Tensor:
    """Hinge D loss: mean(relu(1 - real)) + mean(relu(1 + fake)), mismatches weighted as above."""
    real = F.relu(1.0 - real_logits.float()).mean()
    fake = F.relu(1.0 + fake_logits.float()).mean()
    mis = None if mismatch_logits is None else F.relu(1.0 + mismatch_logits.float()).mean()
    return _combine(real, fake, mis, mismatch_weight)


def g_hinge(fake_logits) -> torch.Tensor:
    """Hinge G loss: -mean(fake)."""
    return -fake_logits.float().mean()


def d_nonsaturating(real_logits, fake_logits, mismatch_logits=None, mismatch_weight: float = 0.5) -> torch.Tensor:
    """Logistic D loss: mean(softplus(-real)) + mean(softplus(fake)), mismatches weighted as above.

    softplus(-x) = -log(sigmoid(x)), so this is binary cross-entropy on the logits.
    """
    real = F.softplus(-real_logits.float()).mean()
    fake = F.softplus(fake_logits.float()).mean()
    mis = None if mismatch_logits is None else F.softplus(mismatch_logits.float()).mean()
    return _combine(real, fake, mis, mismatch_weight)


def g_nonsaturating(fake_logits) -> torch.Tensor:
    """Non-saturating G loss: mean(softplus(-fake)) = -mean(log(sigmoid(fake)))."""
    return F.softplus(-fake_logits.float()).mean()


def _require_grad(name: str, t: torch.Tensor) -> None:
    if not t.requires_grad:
        raise ValueError(f"{name} must require grad before the discriminator sees it (call .requires_grad_())")


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """mean over the batch of ||d D(x) / d x||^2 on real inputs (Mescheder et al., 2018).

    `real_images` may be a tuple of inputs (e.g. an image and its spectrogram); the squared norms
    of all their gradients are added, as for one input made of both. Not scaled: the caller
    multiplies by gamma / 2. The graph is kept (create_graph=True) so the penalty itself can be
    backpropagated into D's weights.
    """
    inputs = real_images if isinstance(real_images, tuple) else (real_images,)
    for x in inputs:
        _require_grad("r1_penalty: real_images", x)
    # Summing the logits gives each sample's own gradient: samples do not interact in D.
    grads = torch.autograd.grad(real_logits.float().sum(), inputs, create_graph=True)
    return sum(g.float().pow(2).flatten(1).sum(dim=1) for g in grads).mean()


def matching_aware_gp(
    real_logits: torch.Tensor, real_images: torch.Tensor, cond: torch.Tensor, p: float = 6.0, k: float = 2.0
) -> torch.Tensor:
    """DF-GAN's matching-aware gradient penalty: k * mean over the batch of ||g||_2^p, where g
    joins the gradients of D(x, c) w.r.t. the image x and the sentence embedding c of matched
    real pairs. Both real_images and cond must require grad.
    """
    _require_grad("matching_aware_gp: real_images", real_images)
    _require_grad("matching_aware_gp: cond", cond)
    gx, gc = torch.autograd.grad(real_logits.float().sum(), (real_images, cond), create_graph=True)
    sq_norm = gx.float().pow(2).flatten(1).sum(dim=1) + gc.float().pow(2).flatten(1).sum(dim=1)  # (B,)
    # (|g|^2)^(p/2) rather than sqrt(|g|^2)^p: sqrt has an infinite derivative at 0.
    return k * sq_norm.pow(p / 2.0).mean()


def mode_seeking(fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                 eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al., 2019) for two fakes of the SAME conditions.

    ratio = mean|G(z_a, c) - G(z_b, c)| / mean|z_a - z_b|; the loss 1 / (ratio + eps) is large
    when different noise gives the same image (mode collapse) and fades as they differ.
    """
    if fake_a.shape != fake_b.shape or z_a.shape != z_b.shape:
        raise ValueError(f"mode_seeking: shapes differ: fakes {tuple(fake_a.shape)} vs {tuple(fake_b.shape)}, "
                         f"noise {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
    ratio = (fake_a.float() - fake_b.float()).abs().mean() / (z_a.float() - z_b.float()).abs().mean()
    return 1.0 / (ratio + eps)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07,
             positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity (CLIP's loss) for paired rows a[i] <-> b[i], (N, D) each.

    Row i of a must pick b[i] among all b (and b[i] pick a[i]) at logits cos / temperature.
    `positives` (N, N) bool marks other pairs that also match (e.g. captions with the same
    content); they are removed from the negatives instead of being pushed apart.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"info_nce: expected two (N, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature  # (N, N)
    n = a.shape[0]
    if positives is not None:
        others = positives.bool() & ~torch.eye(n, dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(others, float("-inf"))
    targets = torch.arange(n, device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def sonify_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between two batches of (normalised log-mel) spectrograms, in float32:
    the paired data's direct signal for a picture-to-sound mapping (L1, as pix2pix pairs its GAN
    term with, since it keeps sharp detail where L2 blurs)."""
    if predicted.shape != target.shape:
        raise ValueError(f"sonify_loss: predicted {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    return (predicted.float() - target.float()).abs().mean()


def fake_hinge(logits) -> torch.Tensor:
    """The fake half of the hinge D loss alone: mean(relu(1 + x)), for extra kinds of negatives."""
    return F.relu(1.0 + logits.float()).mean()


def fake_nonsaturating(logits) -> torch.Tensor:
    """The fake half of the logistic D loss alone: mean(softplus(x))."""
    return F.softplus(logits.float()).mean()


D_LOSSES = {"hinge": d_hinge, "nonsaturating": d_nonsaturating}
FAKE_TERMS = {"hinge": fake_hinge, "nonsaturating": fake_nonsaturating}
G_LOSSES = {"hinge": g_hinge, "nonsaturating": g_nonsaturating}
