"""Differentiable augmentation for data-efficient GAN training (after Zhao et al., 2020).

The same random transforms are applied to every image the discriminator sees, real and fake,
and gradients flow through them to the generator, so D cannot overfit a small real set
without the augmentations leaking into G's outputs.

Policies (comma-separated, applied in the order given):
- color:       brightness shift in [-0.5, 0.5), saturation x [0, 2), contrast x [0.5, 1.5)
- translation: shift by up to 1/8 of the side in each axis, zero padding
- cutout:      zero a random (H/2, W/2) rectangle whose centre lies anywhere in the image

Every transform is per sample and vectorised over the batch; with `group` > 1 it is per group of
that many consecutive rows (all rows of a group get the same transform), so a minibatch-std layer
over those groups measures how the images differ, not how their augmentations do.
"""

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor, generator: torch.Generator | None, group: int, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers of shape (B, *shape[1:]) drawn from `generator` (on its device) once per
    group of `group` rows, moved to x's device and dtype."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(shape[0] // group, *shape[1:], generator=generator, device=device)
    return u.repeat_interleave(group, dim=0).to(x.device, x.dtype)


def _randint(x: torch.Tensor, generator: torch.Generator | None, group: int, low: int, high: int,
             n: int) -> torch.Tensor:
    """n integers in [low, high) from `generator`, one per group of `group` rows, on x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (n // group,), generator=generator, device=device).repeat_interleave(group).to(x.device)


def _color(x: torch.Tensor, generator: torch.Generator | None, group: int = 1) -> torch.Tensor:
    B = x.shape[0]
    x = x + (_rand(x, generator, group, B, 1, 1, 1) - 0.5)  # brightness
    mean_c = x.mean(dim=1, keepdim=True)  # per-pixel grey level
    x = (x - mean_c) * (_rand(x, generator, group, B, 1, 1, 1) * 2.0) + mean_c  # saturation
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean_all) * (_rand(x, generator, group, B, 1, 1, 1) + 0.5) + mean_all  # contrast
    return x


def _translation(x: torch.Tensor, generator: torch.Generator | None, group: int = 1,
                 ratio: float = 0.125) -> torch.Tensor:
    B, C, H, W = x.shape
    sh, sw = max(1, int(H * ratio + 0.5)), max(1, int(W * ratio + 0.5))
    dy = _randint(x, generator, group, -sh, sh + 1, B)  # (B,) content moves down by dy
    dx = _randint(x, generator, group, -sw, sw + 1, B)
    padded = F.pad(x, (sw, sw, sh, sh))  # (B, C, H + 2sh, W + 2sw), zeros outside
    # Output pixel (i, j) reads padded pixel (i + sh - dy, j + sw - dx): two gathers, one per axis.
    rows = torch.arange(H, device=x.device)[None, :] + (sh - dy)[:, None]  # (B, H)
    cols = torch.arange(W, device=x.device)[None, :] + (sw - dx)[:, None]  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * sw))  # (B, C, H, W + 2sw)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))  # (B, C, H, W)


def _cutout(x: torch.Tensor, generator: torch.Generator | None, group: int = 1, ratio: float = 0.5) -> torch.Tensor:
    B, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    # Centres anywhere in the image, so the hole may hang over the border (as in the paper).
    top = _randint(x, generator, group, 0, H, B) - ch // 2  # (B,)
    left = _randint(x, generator, group, 0, W, B) - cw // 2
    r = torch.arange(H, device=x.device)[None, :]
    c = torch.arange(W, device=x.device)[None, :]
    in_r = (r >= top[:, None]) & (r < (top + ch)[:, None])  # (B, H)
    in_c = (c >= left[:, None]) & (c < (left + cw)[:, None])  # (B, W)
    keep = ~(in_r[:, :, None] & in_c[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


AUGMENTATIONS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(
    x: torch.Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None,
    group: int = 1,
) -> torch.Tensor:
    """Applies the comma-separated `policy` to images x (B, C, H, W); "" means no augmentation.
    group: rows per shared transform (B must be a multiple); 1 = every row its own.

    Reproducible given `generator` (seeded the same, it gives the same transforms); None uses
    torch's global RNG. Differentiable with respect to x.
    """
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"diff_augment: unknown policy {unknown}; valid names are {sorted(AUGMENTATIONS)}")
    if x.dim() != 4:
        raise ValueError(f"diff_augment: expected images (B, C, H, W), got shape {tuple(x.shape)}")
    if group < 1 or x.shape[0] % group:
        raise ValueError(f"diff_augment: group must be >= 1 and divide the batch {x.shape[0]}, got {group}")
    for name in names:
        x = AUGMENTATIONS[name](x, generator, group)
    return x
