"""Building blocks shared by the generator and the discriminator.

- `FiLM`: per-channel scale and shift predicted from a style vector (DF-GAN's affine fusion).
- `UpBlock`: residual 2x up-block of the generator, modulated by FiLM.
- `DownBlock`: residual 2x down-block of the discriminator.
- `CrossAttention`: pixels attend to word-level tokens, behind a zero-initialised gate.

No block uses BatchNorm: running statistics fight with GAN training (real and fake batches
have different statistics), with DDP (per-rank stats) and with EMA copies of the model.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2


def check_shape(name: str, t: torch.Tensor, expected: tuple) -> None:
    """Raises ValueError unless `t.shape` matches `expected` (None = any size in that dim)."""
    ok = t.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def normalize_condition(cond: torch.Tensor) -> torch.Tensor:
    """Layer norm without parameters over the last dim: (B, D) -> (B, D) float32, each row at zero
    mean and unit variance across its D values (a zero row stays zero).

    Why: a unit-norm sentence vector (MiniLM) varies by ~0.03 per dimension, 30x less than the
    N(0, 1) noise it is concatenated with, and captions differ from each other by a fraction of
    that (cosine ~0.5 between any two, 0.99 between "top left" and "top right"). Unscaled, the
    caption is a whisper next to z and a linear layer needs thousands of Adam steps to amplify it.
    StyleGAN2's mapping network normalises its class embedding for the same reason.
    eps is tiny because the inputs are: MiniLM's per-dimension variance is 1/384, and LayerNorm's
    usual 1e-5 would already shrink it by 0.2 % and make the result depend on the input's scale.
    """
    return F.layer_norm(cond.float(), cond.shape[-1:], eps=1e-12)


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


class FiLM(nn.Module):
    """x * (1 + scale(w)) + shift(w), with scale and shift per sample and per channel."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(w_dim, 2 * channels)
        # Small weights and zero bias: the block starts near identity (scale ~1, shift ~0),
        # yet the condition still moves the output a little, so its gradient is not zero.
        nn.init.normal_(self.proj.weight, std=0.1 / math.sqrt(w_dim))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(w).to(x.dtype).chunk(2, dim=1)  # (B, C) each
        return torch.addcmul(shift[:, :, None, None], x, 1 + scale[:, :, None, None])


# "nearest" copies each pixel into a 2x2 cell, which ties content to the coarse grid; "bilinear"
# interpolates, so a feature can sit between the cells of the map it came from.
UPSAMPLE_MODES = ("nearest", "bilinear")


class UpBlock(nn.Module):
    """Residual block doubling the resolution: FiLM, LReLU, conv, nearest x2, FiLM, LReLU, conv.

    The first conv runs before the upsampling, at a quarter of the pixels: that halves the
    block's cost on CPU, while the second conv still works at full resolution so it can
    smooth out the nearest-neighbour blockiness.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, upsample: str = "nearest"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"UpBlock: upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        self.film1 = FiLM(w_dim, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film2 = FiLM(w_dim, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A 1x1 projection only where the channel count changes; else the skip is free.
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W), w: (B, w_dim) -> (B, C_out, 2H, 2W)
        h = self.conv1(F.leaky_relu(self.film1(x, w), LRELU_SLOPE))  # (B, C_out, H, W)
        h = self._up(h)  # (B, C_out, 2H, 2W)
        h = self.conv2(F.leaky_relu(self.film2(h, w), LRELU_SLOPE))
        s = x if self.skip is None else self.skip(x)  # 1x1 at low resolution: 4x cheaper
        return self._up(s) + h

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "nearest":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class DownBlock(nn.Module):
    """Residual block halving the resolution: LReLU, conv, LReLU, avg-pool, conv.

    Mirror of `UpBlock`: the widening conv runs after the pooling, at a quarter of the pixels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        h = self.conv1(F.leaky_relu(x, LRELU_SLOPE))
        h = F.avg_pool2d(F.leaky_relu(h, LRELU_SLOPE), 2)
        h = self.conv2(h)
        s = F.avg_pool2d(x, 2)  # pool first so the 1x1 projection sees 4x fewer pixels
        return (s if self.skip is None else self.skip(s)) + h


class CrossAttention(nn.Module):
    """Pixels (queries) attend to word tokens (keys/values); the result is added behind a gate.

    The gate starts at 0, so a freshly built model behaves as if the module were absent and
    word-level detail is blended in only as training finds it useful.
    """

    def __init__(self, channels: int, token_dim: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"CrossAttention: {channels} channels do not split into {self.heads} heads")
        self.norm_x = nn.LayerNorm(channels)
        self.norm_t = nn.LayerNorm(token_dim)
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(token_dim, 2 * channels, bias=False)
        self.out = nn.Linear(channels, channels)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W), tokens: (B, L, token_dim), mask: (B, L) bool, True = real token
        B, C, H, W = x.shape
        L, nh = tokens.shape[1], self.heads
        seq = x.flatten(2).transpose(1, 2)  # (B, HW, C); a free view when x is channels_last
        q = self.q(self.norm_x(seq)).view(B, H * W, nh, C // nh).transpose(1, 2)  # (B, nh, HW, d)
        kv = self.kv(self.norm_t(tokens)).view(B, L, 2, nh, C // nh).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1].to(q.dtype)  # (B, nh, L, d)
        # A row with no real token would softmax over nothing (NaN): let it attend to all
        # tokens and zero its result below, so padding still cannot leak into the output.
        has_any = mask.any(dim=1)  # (B,)
        attend = mask | ~has_any[:, None]
        o = F.scaled_dot_product_attention(q, k.to(q.dtype), v, attn_mask=attend[:, None, None, :])
        o = self.out(o.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        o = o * (self.gate * has_any[:, None, None]).to(o.dtype)
        # (B, HW, C) -> (B, C, H, W): channels_last strides, no copy
        return x + o.transpose(1, 2).reshape(B, C, H, W).to(x.dtype)
