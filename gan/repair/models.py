"""Video repair networks: a gated 3D-conv generator and a temporal PatchGAN discriminator.

Generator (after Yu et al. 2019, free-form inpainting with gated convolutions, and Chang et al.
2019, their 3D version for video):

    [frames with holes zeroed, mask] (B, 4, T, H, W)
      -> encoder: gated conv3d at H, /2, /4          (T is never downsampled)
      -> middle: residual gated conv3d, spatial dilation 2, 4, 8 at H/4 (+ FiLM from a condition)
      -> decoder: nearest x2 + gated conv3d, twice   (+ the encoder's features at H/2 and H)
      -> conv3d -> tanh -> raw prediction (B, T, 3, H, W)
      -> composite: raw inside the holes, the input everywhere else

Why gated convs: a plain conv treats the zero placeholders in the holes as black content; the
learned gate (a per-pixel, per-channel soft mask) lets every layer decide how much of what it
sees is evidence. Why 3D: every layer looks one frame back and ahead, so content visible in a
neighbouring frame can flow into the hole and the fill stays consistent in time.

Discriminator (Chang et al.'s T-PatchGAN, as in E2FGVI/ProPainter): spectrally normalised 3D
convs, kernel (3, 5, 5), stride (1, 2, 2), one hinge logit per space-time patch, so it judges
local texture and its motion rather than the whole clip.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.errors import GanError
from gan.models.blocks import LRELU_SLOPE, FiLM


def _positive_int(name: str, value, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise GanError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class GatedConv3d(nn.Module):
    """out = act(feature_conv(x)) * sigmoid(gate_conv(x)), two 3D convs over the same input.

    Padding keeps T always, and keeps H and W at stride 1 (halves them, for even sizes, at
    stride 2). Stride and dilation act on space only: time is short and stays full rate.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int] = (3, 3, 3),  # (time, height, width); each odd
        stride: int = 1,  # spatial stride s, applied as (1, s, s)
        dilation: int = 1,  # spatial dilation d, applied as (1, d, d)
        activation: bool = True,  # LeakyReLU(0.2) on the feature branch; False = linear features
    ):
        super().__init__()
        kernel_size = tuple(kernel_size)
        if len(kernel_size) != 3 or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_size):
            raise GanError(f"GatedConv3d: kernel_size must be three odd positive integers (time, height, "
                           f"width), got {kernel_size!r}")
        _positive_int("GatedConv3d stride", stride)
        _positive_int("GatedConv3d dilation", dilation)
        kt, kh, kw = kernel_size
        opts = dict(kernel_size=kernel_size, stride=(1, stride, stride), dilation=(1, dilation, dilation),
                    padding=(kt // 2, dilation * (kh // 2), dilation * (kw // 2)))
        self.feature = nn.Conv3d(in_channels, out_channels, **opts)
        self.gate = nn.Conv3d(in_channels, out_channels, **opts)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s)
        f = self.feature(x)
        if self.activation:
            f = F.leaky_relu(f, LRELU_SLOPE)
        return f * torch.sigmoid(self.gate(x))


def _up(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 in space only. (B, C, T, H, W) -> (B, C, T, 2H, 2W)"""
    return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")


def _check_clip_and_mask(where: str, frames, mask) -> torch.Tensor:
    """Validates frames (B, T, 3, H, W) float and mask (B, T, 1, H, W) bool or 0/1 float.
    Returns the mask as bool (True = hole)."""
    if not torch.is_tensor(frames) or frames.dim() != 5 or frames.shape[2] != 3 \
            or not frames.is_floating_point():
        got = f"{tuple(frames.shape)} {frames.dtype}" if torch.is_tensor(frames) else type(frames).__name__
        raise GanError(f"{where}: expected float frames (B, T, 3, H, W) in [-1, 1], got {got}")
    B, T, _, H, W = frames.shape
    if not torch.is_tensor(mask) or tuple(mask.shape) != (B, T, 1, H, W):
        got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise GanError(f"{where}: expected a mask of shape (B, T, 1, H, W) = {(B, T, 1, H, W)} "
                       f"(1 = hole), got {got}")
    if mask.dtype == torch.bool:
        return mask
    if ((mask != 0) & (mask != 1)).any():
        raise GanError(f"{where}: the mask must be bool or hold only 0 and 1 (1 = hole)")
    return mask != 0


def propagate_visible(known: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A flow-free propagation prior: each hole pixel takes its value from the nearest frame where
    that pixel is visible (ties: the earlier frame), as gan.repair.baselines.nearest_visible does
    before its Telea fallback. known (B, T, 3, H, W), hole (B, T, 1, H, W) bool.
    Returns (fill (B, T, 3, H, W): the copied values at hole pixels that have a source, 0 elsewhere;
    found (B, T, 1, H, W) bool: which hole pixels have one)."""
    T = known.shape[1]
    visible = ~hole
    fill, found = torch.zeros_like(known), torch.zeros_like(hole)
    for d in range(1, T):
        for s in (-d, d):  # the earlier frame first, so it wins ties
            lo, hi = max(0, -s), min(T, T - s)  # frames t in [lo, hi) have a source frame t + s
            take = hole[:, lo:hi] & ~found[:, lo:hi] & visible[:, lo + s:hi + s]  # (B, hi-lo, 1, H, W)
            fill[:, lo:hi] = torch.where(take, known[:, lo + s:hi + s], fill[:, lo:hi])
            found[:, lo:hi] |= take
    return fill, found


class RepairGenerator(ModelMixin, ConfigMixin):
    """Fills the holes of a clip; known pixels pass through exactly. Any T >= 1, any H, W
    divisible by 4."""

    @register_to_config
    def __init__(
        self,
        base_channels: int = 32,  # Channels at full resolution; x2 at H/2 and x4 at H/4 (the middle).
        dilations: tuple[int, ...] = (2, 4, 8),  # Spatial dilation of each residual middle block at H/4; () = none.
        cond_dim: int | None = None,  # Length of the pooled condition (B, cond_dim) for FiLM; None = no condition path.
        propagate: bool = False,  # Also feed propagate_visible's fill and its found-mask (4 more input channels); False = RGB + mask only.
    ):
        super().__init__()
        c = _positive_int("RepairGenerator base_channels", base_channels)
        dilations = tuple(_positive_int("RepairGenerator dilations entry", d) for d in dilations)
        if cond_dim is not None:
            _positive_int("RepairGenerator cond_dim", cond_dim)
        # Encoder: 4 input channels = RGB with holes zeroed + the mask (holes must be told apart
        # from genuinely mid-gray pixels); with propagate, + the pixels copied from the nearest frame
        # where they are visible and where such a frame exists: what a hole hides is often in view
        # a few frames away, too far for a small 3D receptive field to fetch on its own.
        self.enc1 = GatedConv3d(8 if propagate else 4, c, kernel_size=(3, 5, 5))  # (B, c, T, H, W)
        self.down1 = GatedConv3d(c, 2 * c, stride=2)  # (B, 2c, T, H/2, W/2)
        self.enc2 = GatedConv3d(2 * c, 2 * c)
        self.down2 = GatedConv3d(2 * c, 4 * c, stride=2)  # (B, 4c, T, H/4, W/4)
        # Middle: dilations 2, 4, 8 add 2 * (2 + 4 + 8) = 28 px of reach at H/4 (112 input px)
        # without more downsampling, which would lose detail; residual, so a block can pass through.
        self.middle = nn.ModuleList(GatedConv3d(4 * c, 4 * c, dilation=d) for d in dilations)
        self.films = nn.ModuleList(FiLM(cond_dim, 4 * c) for _ in dilations) if cond_dim else None
        self.post = GatedConv3d(4 * c, 4 * c)
        # Decoder: nearest upsampling + conv instead of transposed convs (no checkerboards); the
        # encoder's features are added back at H/2 and H, so known edges next to a hole stay sharp.
        self.up1 = GatedConv3d(4 * c, 2 * c)  # after _up: (B, 2c, T, H/2, W/2)
        self.dec1 = GatedConv3d(2 * c, 2 * c)
        self.up2 = GatedConv3d(2 * c, c)  # after _up: (B, c, T, H, W)
        self.dec2 = GatedConv3d(c, c)
        self.to_rgb = nn.Conv3d(c, 3, kernel_size=3, padding=1)

    def forward(
        self,
        frames: torch.Tensor,
        mask: torch.Tensor,
        cond: torch.Tensor | None = None,
        return_raw: bool = False,
    ):
        """frames (B, T, 3, H, W) in [-1, 1], mask (B, T, 1, H, W) bool or 0/1 float (1 = hole),
        cond (B, cond_dim) when the model has a condition path, else None.

        Returns the composite (B, T, 3, H, W): the prediction inside the holes, the input
        elsewhere (bit-exact). With return_raw=True, (composite, raw), where raw is the
        prediction at every pixel, which the valid-region L1 needs (the composite has no
        gradient there). Hole pixels of `frames` are never read: they are zeroed first.
        """
        hole = _check_clip_and_mask("RepairGenerator", frames, mask)  # (B, T, 1, H, W) bool
        B, T, _, H, W = frames.shape
        if H % 4 or W % 4:
            raise GanError(f"RepairGenerator: height and width must be divisible by 4 (two 2x "
                           f"downsamplings), got {H}x{W} (HxW)")
        if self.films is None and cond is not None:
            raise GanError("RepairGenerator: got a condition, but the model was built with "
                           "cond_dim=None (no condition path)")
        if self.films is not None:
            want = (B, self.config.cond_dim)
            if not torch.is_tensor(cond) or tuple(cond.shape) != want or not cond.is_floating_point():
                got = f"{tuple(cond.shape)} {cond.dtype}" if torch.is_tensor(cond) else repr(cond)
                raise GanError(f"RepairGenerator: expected a float condition of shape {want}, got {got}")

        known = frames.masked_fill(hole, 0.0)  # also clears NaN/inf garbage, which `* (1 - mask)` would not
        parts = [known, hole.to(frames.dtype)]
        if self.config.propagate:
            fill, found = propagate_visible(known, hole)
            parts += [fill, found.to(frames.dtype)]
        x = torch.cat(parts, dim=2).transpose(1, 2)  # (B, 4 or 8, T, H, W)
        e1 = self.enc1(x)  # (B, c, T, H, W)
        e2 = self.enc2(self.down1(e1))  # (B, 2c, T, H/2, W/2)
        h = self.down2(e2)  # (B, 4c, T, H/4, W/4)
        for i, block in enumerate(self.middle):
            if self.films is not None:
                # FiLM works on (B, C, H, W); folding T into H leaves its per-channel math unchanged.
                h = self.films[i](h.flatten(2, 3), cond).view_as(h)
            h = h + block(h)
        h = self.post(h)
        h = self.dec1(self.up1(_up(h)) + e2)  # (B, 2c, T, H/2, W/2)
        h = self.dec2(self.up2(_up(h)) + e1)  # (B, c, T, H, W)
        raw = torch.tanh(self.to_rgb(h)).transpose(1, 2)  # (B, T, 3, H, W)
        out = torch.where(hole, raw, known)
        return (out, raw) if return_raw else out


class TemporalPatchDiscriminator(ModelMixin, ConfigMixin):
    """T-PatchGAN: clips (+ masks) -> one logit per space-time patch (B, T, h, w)."""

    @register_to_config
    def __init__(
        self,
        base_channels: int = 32,  # Channels of the first layer; doubled per layer up to max_channels.
        layers: int = 4,  # 3D convs in all, the last one giving the 1-channel logits; >= 2.
        max_downsamplings: int = 3,  # Spatial halvings at most (16 px -> 2x2 patches); later layers keep the size.
        max_channels: int = 256,  # Cap on the channels of the hidden layers.
        use_mask: bool = True,  # Feed the hole mask as a 4th channel (Chang et al.); False = RGB only.
    ):
        super().__init__()
        _positive_int("TemporalPatchDiscriminator base_channels", base_channels)
        _positive_int("TemporalPatchDiscriminator layers", layers, low=2)
        _positive_int("TemporalPatchDiscriminator max_downsamplings", max_downsamplings, low=0)
        convs = []
        cin = 4 if use_mask else 3
        for i in range(layers):
            last = i == layers - 1
            cout = 1 if last else min(max_channels, base_channels * 2**i)
            stride = 1 if last or i >= max_downsamplings else 2
            convs.append(spectral_norm(nn.Conv3d(cin, cout, kernel_size=(3, 5, 5), stride=(1, stride, stride),
                                                 padding=(1, 2, 2))))
            cin = cout
        self.convs = nn.ModuleList(convs)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, 3, H, W) in [-1, 1]; mask (B, T, 1, H, W) (1 = hole) when built with
        use_mask=True, else None. Returns patch logits (B, T, h, w), h = ceil(H / 2^k) for k
        downsamplings."""
        if self.config.use_mask:
            if mask is None:
                raise GanError("TemporalPatchDiscriminator: this model was built with use_mask=True; "
                               "pass the hole mask (B, T, 1, H, W)")
            hole = _check_clip_and_mask("TemporalPatchDiscriminator", frames, mask)
            x = torch.cat([frames, hole.to(frames.dtype)], dim=2)  # (B, T, 4, H, W)
        else:
            if mask is not None:
                raise GanError("TemporalPatchDiscriminator: got a mask, but the model was built "
                               "with use_mask=False")
            if not torch.is_tensor(frames) or frames.dim() != 5 or frames.shape[2] != 3:
                got = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
                raise GanError(f"TemporalPatchDiscriminator: expected frames (B, T, 3, H, W), got {got}")
            x = frames
        h = x.transpose(1, 2)  # (B, C, T, H, W)
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = F.leaky_relu(h, LRELU_SLOPE)
        return h.squeeze(1)  # (B, T, h, w)
