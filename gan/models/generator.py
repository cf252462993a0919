"""Conditional text-to-image generator in the spirit of DF-GAN (Tao et al., 2022).

(z, cond) -> mapping -> w -> linear -> 4x4 map -> UpBlocks (x2 each) -> LReLU -> 3x3 conv -> tanh -> (B, 3, R, R)

The sentence condition enters every block through FiLM: a shared mapping MLP turns
concat(z, cond) into a style vector w, and each FiLM layer predicts a per-channel scale and
shift from w. Optional word-level cross-attention lets pixels look at the caption's tokens at
chosen resolutions.
"""

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from gan.models.blocks import LRELU_SLOPE, CrossAttention, UpBlock, check_shape, is_power_of_two, normalize_condition

# Width of the style vector w shared by all FiLM layers. One shared mapping plus a linear head
# per FiLM costs far fewer parameters than DF-GAN's separate two-layer MLP per affine layer.
W_DIM = 128


class ConditionalGenerator(ModelMixin, ConfigMixin):
    """Maps noise z and a sentence embedding (plus optional word tokens) to an image in [-1, 1]."""

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,  # Output side in pixels; a power of two >= 16.
        z_dim: int = 128,  # Length of the noise vector z.
        cond_dim: int = 384,  # Length of the pooled sentence embedding (384 = MiniLM).
        token_dim: int | None = 384,  # Width of word-level token features; None = no cross-attention modules at all.
        base_channels: int = 64,  # Channels at the output resolution; doubled per halving of resolution.
        max_channels: int = 256,  # Cap on channels at the low resolutions.
        attention_resolutions: tuple[int, ...] = (16,),  # Resolutions that get word cross-attention; () = none.
        out_channels: int = 3,  # Image channels (3 = RGB).
        cond_norm: bool = False,  # Layer-normalise the pooled condition first (blocks.normalize_condition); False = use it raw (models saved before this option).
        upsample: str = "nearest",  # How each block doubles the resolution: "nearest" or "bilinear" (blocks.UPSAMPLE_MODES).
    ):
        super().__init__()
        if not is_power_of_two(resolution) or resolution < 16:
            raise ValueError(f"ConditionalGenerator: resolution must be a power of two >= 16, got {resolution}")
        att = tuple(int(r) for r in attention_resolutions)
        valid = [4 * 2**i for i in range(int(math.log2(resolution // 4)) + 1)]
        bad = [r for r in att if r not in valid]
        if bad:
            raise ValueError(f"ConditionalGenerator: attention_resolutions {bad} not among the feature sizes {valid}")

        def channels(res: int) -> int:
            return min(max_channels, base_channels * (resolution // res))

        self.mapping = nn.Sequential(
            nn.Linear(z_dim + cond_dim, W_DIM), nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(W_DIM, W_DIM), nn.LeakyReLU(LRELU_SLOPE),
        )
        for layer in self.mapping:
            if isinstance(layer, nn.Linear):  # keep w at unit scale, so FiLM's small init means what it says
                nn.init.kaiming_normal_(layer.weight, a=LRELU_SLOPE)
                nn.init.zeros_(layer.bias)
        # The 4x4 start map comes from w, not z alone, so the caption can decide WHERE things go
        # (FiLM only rescales channels and cannot move content).
        self.fc = nn.Linear(W_DIM, channels(4) * 16)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        if token_dim is not None and 4 in att:
            self.attn["4"] = CrossAttention(channels(4), token_dim)
        res = 4
        while res < resolution:
            self.blocks.append(UpBlock(channels(res), channels(2 * res), W_DIM, upsample))
            res *= 2
            if token_dim is not None and res in att:
                self.attn[str(res)] = CrossAttention(channels(res), token_dim)
        self.to_rgb = nn.Conv2d(channels(resolution), out_channels, 3, padding=1)

    @staticmethod
    def sample_noise(
        batch: int,
        z_dim: int,
        generator: torch.Generator | None = None,
        truncation: float | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Returns z of shape (batch, z_dim), float32.

        truncation None (or >= 10, where the tails are ~1e-23): plain N(0, I).
        Otherwise each value is drawn from N(0, 1) restricted to [-truncation, truncation] -
        the truncation trick: same distribution as resampling every |z| > truncation until it
        falls inside, but drawn in one pass through the inverse CDF, so small truncations do
        not loop. Smaller truncation = less variety, higher typical quality.
        """
        if device is None:
            device = generator.device if generator is not None else "cpu"
        if truncation is None or truncation >= 10:
            return torch.randn(batch, z_dim, generator=generator, device=device)
        if truncation <= 0:
            raise ValueError(f"sample_noise: truncation must be > 0 (or None), got {truncation}")
        # float64 keeps erfinv accurate near the ends of the interval.
        edge = math.erf(truncation / math.sqrt(2.0))  # 2*Phi(t) - 1
        u = torch.rand(batch, z_dim, generator=generator, device=device, dtype=torch.float64)
        z = math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0) * edge)
        return z.clamp_(-truncation, truncation).float()

    def forward(
        self,
        z: torch.Tensor,
        cond: torch.Tensor,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z (B, z_dim), cond (B, cond_dim), tokens (B, L, token_dim) or None,
        token_mask (B, L) bool with True = real token, or None (= all real).
        Returns images (B, out_channels, R, R) in [-1, 1].

        Tokens are ignored when the model was built with token_dim=None, so one training loop
        can drive models with and without word attention.
        """
        cfg = self.config
        check_shape("ConditionalGenerator z", z, (None, cfg.z_dim))
        B = z.shape[0]
        check_shape("ConditionalGenerator cond", cond, (B, cfg.cond_dim))
        if not cond.is_floating_point():
            raise ValueError(f"ConditionalGenerator cond: expected a float tensor, got {cond.dtype}")
        use_tokens = tokens is not None and len(self.attn) > 0
        if token_mask is not None and tokens is None:
            raise ValueError("ConditionalGenerator: token_mask given without tokens")
        if use_tokens:
            check_shape("ConditionalGenerator tokens", tokens, (B, None, cfg.token_dim))
            if token_mask is None:
                token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            check_shape("ConditionalGenerator token_mask", token_mask, tuple(tokens.shape[:2]))
            if token_mask.dtype != torch.bool:
                raise ValueError(
                    f"ConditionalGenerator token_mask: expected bool (True = real token), got {token_mask.dtype}"
                )

        if cfg.cond_norm:
            cond = normalize_condition(cond)
        w = self.mapping(torch.cat([z, cond.to(z.dtype)], dim=1))  # (B, W_DIM)
        h = self.fc(w).view(B, -1, 4, 4)  # (B, C4, 4, 4)
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)  # follow the model's layout
        if use_tokens and "4" in self.attn:
            h = self.attn["4"](h, tokens, token_mask)
        res = 4
        for block in self.blocks:
            h = block(h, w)  # (B, C, 2res, 2res)
            res *= 2
            if use_tokens and str(res) in self.attn:
                h = self.attn[str(res)](h, tokens, token_mask)
        return torch.tanh(self.to_rgb(F.leaky_relu(h, LRELU_SLOPE)))  # (B, out_channels, R, R)
