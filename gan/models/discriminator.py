"""Projection discriminator (Miyato & Koyama, 2018) for a continuous condition.

image -> 3x3 conv -> DownBlocks (/2 each) to 4x4 -> LReLU -> h (B, C, 4, 4)
phi = [sum of h over pixels (B, C), flatten(1x1 conv of h) (B, 16 P)]
logit = linear(phi) + <embed(cond), phi>

The flattened part keeps WHERE features are: a caption that says "top left" can only be
checked by a head that sees position, and the sum over pixels alone throws it away.

The features phi do not depend on the condition, so scoring the same images against several
conditions (the matching-aware "real image, wrong caption" term) costs one feature pass:
`forward(images, cond, mismatch_cond)` or `score(features(images), cond)`.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gan.models.blocks import LRELU_SLOPE, DownBlock, check_shape, is_power_of_two, normalize_condition


def minibatch_std(h: torch.Tensor, group: int, spatial: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): for each group of `group` consecutive rows, the std over the
    group of every feature, averaged to one number (spatial: to one number per location, a map)
    and broadcast to the group's rows. A generator that draws a group's images alike (mode
    collapse) shows up here, which no per-image score can see when each image alone is plausible;
    the map also says WHERE they are alike (the edges of a shape that never moves).
    B must be a multiple of the group (or smaller)."""
    b, c, hh, ww = h.shape
    g = min(group, b)
    if b % g:
        raise ValueError(f"minibatch_std: batch {b} is not a multiple of the group size {g}")
    x = h.float().reshape(b // g, g, c, hh * ww)  # (B/g, g, C, HW); channels_last input is not viewable
    s = (x.var(dim=1, unbiased=False) + 1e-8).sqrt()  # (B/g, C, HW)
    if spatial:
        s = s.mean(dim=1).view(b // g, 1, hh, ww)  # (B/g, 1, H, W)
    else:
        s = s.mean(dim=(1, 2)).view(b // g, 1, 1, 1).expand(b // g, 1, hh, ww)
    return s.repeat_interleave(g, dim=0).to(h.dtype)  # (B, 1, H, W)


class ProjectionDiscriminator(ModelMixin, ConfigMixin):
    """Scores (image, condition) pairs; higher = more likely a real image matching its condition."""

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,  # Input side in pixels; a power of two >= 16.
        cond_dim: int = 384,  # Length of the pooled condition embedding (384 = MiniLM).
        base_channels: int = 64,  # Channels at the input resolution; doubled per halving of resolution.
        max_channels: int = 256,  # Cap on channels at the low resolutions (also the width of phi).
        in_channels: int = 3,  # Image channels (3 = RGB).
        spectral_norm: bool = False,  # Wrap every conv/linear in spectral normalisation; False = plain layers.
        position_channels: int | None = 32,  # Channels of the flattened 4x4 map in phi; None = sum-pooling only.
        cond_norm: bool = False,  # Layer-normalise the condition before the projection (blocks.normalize_condition); False = raw.
        mbstd_group: int = 0,  # Minibatch-std group: consecutive rows in groups of this size get their features' std as an extra 4x4 channel; 0 = off.
        mbstd_spatial: bool = False,  # The minibatch std per 4x4 location (a map) instead of one number per group; needs mbstd_group.
    ):
        super().__init__()
        if not is_power_of_two(resolution) or resolution < 16:
            raise ValueError(f"ProjectionDiscriminator: resolution must be a power of two >= 16, got {resolution}")

        def channels(res: int) -> int:
            return min(max_channels, base_channels * (resolution // res))

        self.from_rgb = nn.Conv2d(in_channels, channels(resolution), 3, padding=1)
        self.blocks = nn.ModuleList()
        res = resolution
        while res > 4:
            self.blocks.append(DownBlock(channels(res), channels(res // 2)))
            res //= 2
        self.mbstd = None
        if mbstd_group:
            if mbstd_group < 2:
                raise ValueError(f"ProjectionDiscriminator: mbstd_group must be 0 (off) or >= 2, got {mbstd_group}")
            self.mbstd = nn.Conv2d(channels(4) + 1, channels(4), 3, padding=1)
        elif mbstd_spatial:
            raise ValueError("ProjectionDiscriminator: mbstd_spatial needs mbstd_group >= 2")
        self.to_position = None
        self.feature_dim = channels(4)
        if position_channels:
            self.to_position = nn.Conv2d(channels(4), position_channels, 1)
            self.feature_dim += position_channels * 16
        self.linear = nn.Linear(self.feature_dim, 1)
        # No bias: a condition-only offset cannot tell real from fake, so it would be dead weight.
        self.embed = nn.Linear(cond_dim, self.feature_dim, bias=False)
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    _sn(module)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, in_channels, R, R) -> phi (B, C), float32."""
        cfg = self.config
        check_shape("ProjectionDiscriminator images", images, (None, cfg.in_channels, cfg.resolution, cfg.resolution))
        h = self.from_rgb(images)  # (B, C0, R, R)
        for block in self.blocks:
            h = block(h)  # halves H and W
        if self.mbstd is not None:
            h = self.mbstd(torch.cat([h, minibatch_std(h, cfg.mbstd_group, cfg.mbstd_spatial)], dim=1))  # (B, C4, 4, 4)
        h = F.leaky_relu(h, LRELU_SLOPE)  # (B, C4, 4, 4)
        phi = h.sum(dim=(2, 3))  # (B, C4)
        if self.to_position is not None:
            phi = torch.cat([phi, self.to_position(h).flatten(1)], dim=1)  # (B, C4 + 16 P)
        return phi.float()

    def score(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """phi (B, C) from `features`, cond (B, cond_dim) -> logits (B,), float32."""
        check_shape("ProjectionDiscriminator features", features, (None, self.feature_dim))
        check_shape("ProjectionDiscriminator cond", cond, (features.shape[0], self.config.cond_dim))
        # The head is tiny; run it in float32 so bf16 autocast does not round the logits.
        with torch.autocast(device_type=features.device.type, enabled=False):
            phi = features.float()
            cond = normalize_condition(cond) if self.config.cond_norm else cond.float()
            return self.linear(phi).squeeze(1) + (self.embed(cond) * phi).sum(dim=1)

    def forward(
        self,
        images: torch.Tensor,
        cond: torch.Tensor,
        mismatch_cond: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """images (B, in_channels, R, R), cond (B, cond_dim) -> logits (B,) float32.

        With mismatch_cond (B, cond_dim) also scores the same images against it and returns
        (logits, mismatch_logits) from one feature pass. Prefer this over calling `features`
        and `score` directly when the model is wrapped in DDP: DDP only prepares its gradient
        synchronisation when the call goes through forward.
        """
        phi = self.features(images)
        logits = self.score(phi, cond)
        if mismatch_cond is None:
            return logits
        return logits, self.score(phi, mismatch_cond)
