"""Joint generation: one latent -> an image AND its sound (a log-mel spectrogram), judged together.

Generator (one noise draw, optional caption condition):

    (z, cond) -> mapping -> w -> linear -> 4x4 -> shared UpBlocks to `trunk_resolution`
        (+ cross-attention to the caption's word tokens at `attention_resolutions`)
        -> image UpBlocks -> conv -> tanh -> (B, 3, R, R)
        -> audio UpBlocks -> conv -> tanh -> (B, 1, M, M)   normalised log-mel (gan.joint.mel)

Both heads grow out of one trunk, so whatever the trunk decides (which shape, where, what colour)
reaches both; that shared decision is what makes the picture and the sound agree. By default the
heads' FiLM layers also read w (the caption included); with head_style = "trunk" they read a style
taken from the trunk's last map instead, so a head cannot settle an ambiguous caption its own way.
With audio_source = "image" the audio head does not grow from the trunk at all but from the
finished picture (a conv tower reads it back into a vector that keeps where things are; detached,
so the sound follows the picture): whatever the picture shows, the sound says.

The word tokens matter for position: MiniLM's sentence vectors of "top left" and "top right"
captions are nearly identical (cosine 0.99), the words themselves are not.

Discriminator: an image branch and an audio branch (conv towers down to 4x4, position kept as in
`ProjectionDiscriminator`), a logit per branch, and a joint head on both branches' features. The
joint head also scores index pairs (image of row i, audio of row j), which is how mismatched real
pairs are judged as fake (arXiv 2104.02656 uses the same one-per-modality + joint layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gan.models.blocks import (LRELU_SLOPE, CrossAttention, DownBlock, UpBlock, check_shape, is_power_of_two,
                               normalize_condition)
from gan.models.discriminator import minibatch_std
from gan.models.generator import W_DIM, ConditionalGenerator

HEADS = ("image", "audio", "joint")
AUDIO_SOURCES = ("trunk", "image")


def _check_resolution(who: str, name: str, value: int, low: int = 16) -> None:
    if not is_power_of_two(value) or value < low:
        raise ValueError(f"{who}: {name} must be a power of two >= {low}, got {value}")


class JointGenerator(ModelMixin, ConfigMixin):
    """Maps noise z (and a condition, when cond_dim > 0) to an (image, log-mel) pair in [-1, 1]."""

    @register_to_config
    def __init__(
        self,
        image_resolution: int = 32,  # Image side in pixels; a power of two >= 16.
        audio_resolution: int = 64,  # Mel bins = time frames of the spectrogram; a power of two >= 16.
        z_dim: int = 128,  # Length of the noise vector z.
        cond_dim: int = 0,  # Length of the pooled condition; 0 = unconditional (no condition input at all).
        base_channels: int = 32,  # Image-head channels at the image resolution; doubled per halving.
        audio_channels: int = 16,  # Audio-head channels at the audio resolution; doubled per halving.
        max_channels: int = 256,  # Cap on channels at low resolutions (trunk and heads).
        trunk_resolution: int = 8,  # Side of the last shared feature map; both heads branch off here.
        mel: dict | None = None,  # gan.joint.mel.MelSettings as a dict (how to turn the mel into sound); None = defaults.
        token_dim: int | None = None,  # Width of the caption's word-token features; None = no cross-attention at all.
        attention_resolutions: tuple[int, ...] = (4, 8),  # Trunk sizes whose features attend to the word tokens (with token_dim).
        cond_norm: bool = False,  # Layer-normalise the pooled condition first (blocks.normalize_condition); False = use it raw.
        upsample: str = "nearest",  # How each block doubles the resolution: "nearest" or "bilinear" (blocks.UPSAMPLE_MODES).
        head_style: str = "w",  # What modulates the heads' FiLM layers: "w" (the mapping's style, caption included) or "trunk" (a style read from the trunk's last map alone, so the trunk decides for both heads).
        audio_source: str = "trunk",  # What the audio head grows from: "trunk" (the shared map, as the image head does) or "image" (the generated picture, read back by a conv tower into a vector; the audio head's start map and style from that reading and z): the sound is made from what was drawn.
    ):
        super().__init__()
        who = "JointGenerator"
        if head_style not in ("w", "trunk"):
            raise ValueError(f"{who}: head_style must be 'w' or 'trunk', got {head_style!r}")
        if audio_source not in AUDIO_SOURCES:
            raise ValueError(f"{who}: audio_source must be one of {AUDIO_SOURCES}, got {audio_source!r}")
        _check_resolution(who, "image_resolution", image_resolution)
        _check_resolution(who, "audio_resolution", audio_resolution)
        if not is_power_of_two(trunk_resolution) or not 4 <= trunk_resolution <= min(image_resolution, audio_resolution):
            raise ValueError(f"{who}: trunk_resolution must be a power of two in [4, {min(image_resolution, audio_resolution)}], "
                             f"got {trunk_resolution}")

        def image_ch(res: int) -> int:
            return min(max_channels, base_channels * (image_resolution // res))

        def audio_ch(res: int) -> int:
            return min(max_channels, audio_channels * (audio_resolution // res))

        self.mapping = nn.Sequential(
            nn.Linear(z_dim + cond_dim, W_DIM), nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(W_DIM, W_DIM), nn.LeakyReLU(LRELU_SLOPE),
        )
        for layer in self.mapping:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, a=LRELU_SLOPE)
                nn.init.zeros_(layer.bias)
        # The trunk is as wide as the wider head needs at each size, so neither head starts starved.
        trunk_ch = {r: max(image_ch(r), audio_ch(r)) for r in (4 * 2**i for i in range(8)) if r <= trunk_resolution}
        self.fc = nn.Linear(W_DIM, trunk_ch[4] * 16)
        self.trunk = nn.ModuleList(UpBlock(trunk_ch[r], trunk_ch[2 * r], W_DIM, upsample)
                                   for r in sorted(trunk_ch) if 2 * r <= trunk_resolution)
        self.attn = nn.ModuleDict()
        if token_dim is not None:
            if token_dim < 1 or not attention_resolutions or any(r not in trunk_ch for r in attention_resolutions):
                raise ValueError(f"{who}: with token_dim ({token_dim}, >= 1) attention_resolutions must be a non-empty "
                                 f"subset of the trunk sizes {sorted(trunk_ch)}, got {list(attention_resolutions)}")
            self.attn.update({str(r): CrossAttention(trunk_ch[r], token_dim) for r in sorted(set(attention_resolutions))})
        # "trunk": the heads see the caption only through the shared map, never directly, so an
        # ambiguous caption is resolved once, in the trunk, instead of once per head.
        self.trunk_style = (nn.Sequential(nn.Linear(trunk_ch[trunk_resolution], W_DIM), nn.LeakyReLU(LRELU_SLOPE))
                           if head_style == "trunk" else None)
        if self.trunk_style is not None:  # unit-scale style, as the mapping's
            nn.init.kaiming_normal_(self.trunk_style[0].weight, a=LRELU_SLOPE)
            nn.init.zeros_(self.trunk_style[0].bias)
        self.image_blocks, c = self._head(trunk_ch[trunk_resolution], trunk_resolution, image_resolution, image_ch,
                                          upsample)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        self.audio_blocks, c = self._head(trunk_ch[trunk_resolution], trunk_resolution, audio_resolution, audio_ch,
                                          upsample)
        self.to_mel = nn.Conv2d(c, 1, 3, padding=1)
        # "image": the sound is read off the finished picture, so both outputs carry ONE decision about
        # colour, shape, size and place, even for a caption the text side cannot place (there each
        # head of a shared trunk commits, confidently, to its own reading).
        self.image_reader = self.audio_style = self.audio_fc = None
        if audio_source == "image":
            # A picture's place is a sound's rhythm, its colour a pitch: nothing maps pixel to
            # spectrogram position, so the reading is a vector that keeps where things are (as D's
            # towers), and the audio head starts from it as the image head starts from w.
            t, c_t = trunk_resolution, trunk_ch[trunk_resolution]
            self.image_reader = _Tower(3, image_resolution, base_channels, max_channels, position_channels=16)
            self.audio_style = nn.Sequential(nn.Linear(self.image_reader.feature_dim + z_dim, W_DIM), nn.LeakyReLU(LRELU_SLOPE),
                                             nn.Linear(W_DIM, W_DIM), nn.LeakyReLU(LRELU_SLOPE))
            for layer in self.audio_style:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_normal_(layer.weight, a=LRELU_SLOPE)
                    nn.init.zeros_(layer.bias)
            self.audio_fc = nn.Linear(W_DIM, c_t * t * t)

    @staticmethod
    def _head(c_in: int, res: int, out_res: int, channels, upsample: str) -> tuple[nn.ModuleList, int]:
        blocks = nn.ModuleList()
        while res < out_res:
            blocks.append(UpBlock(c_in, channels(2 * res), W_DIM, upsample))
            c_in, res = channels(2 * res), 2 * res
        return blocks, c_in

    sample_noise = staticmethod(ConditionalGenerator.sample_noise)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None, sound_of: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """z (B, z_dim), cond (B, cond_dim) or None when cond_dim = 0; tokens (B, L, token_dim) and
        token_mask (B, L) bool (True = real token) for a model built with token_dim: required there,
        a row without any real token (no caption) gets no attention output.
        Returns (images (B, 3, R, R), mels (B, 1, M, M)), both in [-1, 1]. With audio_source = "image",
        sound_of (B, 3, R, R): other pictures (real ones, in training) for the audio head to make
        sounds of too, with noise z, in the same pass; they come back third: (images, mels, their mels)."""
        cfg = self.config
        check_shape("JointGenerator z", z, (None, cfg.z_dim))
        B, noise = z.shape[0], z
        if cfg.cond_dim:
            if cond is None:
                raise ValueError(f"JointGenerator: this model is conditioned (cond_dim={cfg.cond_dim}); cond is required")
            check_shape("JointGenerator cond", cond, (B, cfg.cond_dim))
            if cfg.cond_norm:  # the no-caption condition is a zero row, and stays one
                cond = normalize_condition(cond)
            z = torch.cat([z, cond.to(z.dtype)], dim=1)
        elif cond is not None and cond.numel():
            raise ValueError("JointGenerator: this model is unconditional (cond_dim=0); got a condition")
        if self.attn:
            if tokens is None or token_mask is None:
                raise ValueError(f"JointGenerator: this model attends to word tokens (token_dim={cfg.token_dim}); "
                                 "tokens and token_mask are required")
            check_shape("JointGenerator tokens", tokens, (B, None, cfg.token_dim))
            check_shape("JointGenerator token_mask", token_mask, tuple(tokens.shape[:2]))
            if token_mask.dtype != torch.bool:
                raise ValueError(f"JointGenerator token_mask: expected bool (True = real token), got {token_mask.dtype}")
        elif tokens is not None:
            raise ValueError("JointGenerator: this model has no cross-attention (token_dim=None); got tokens")
        if sound_of is not None:
            if self.image_reader is None:
                raise ValueError("JointGenerator: sound_of needs audio_source='image' (the audio head reads pictures)")
            check_shape("JointGenerator sound_of", sound_of, (B, 3, cfg.image_resolution, cfg.image_resolution))
        w = self.mapping(z)  # (B, W_DIM)
        h = self.fc(w).view(B, -1, 4, 4)  # (B, C4, 4, 4)
        if self.to_rgb.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        res = 4
        if "4" in self.attn:
            h = self.attn["4"](h, tokens, token_mask)
        for block in self.trunk:
            h = block(h, w)  # (B, C, 2r, 2r) up to trunk_resolution
            res *= 2
            if str(res) in self.attn:
                h = self.attn[str(res)](h, tokens, token_mask)
        if self.trunk_style is not None:
            w = self.trunk_style(h.float().mean(dim=(2, 3)))  # (B, W_DIM) from the trunk's map alone
        x = h
        for block in self.image_blocks:
            x = block(x, w)
        images = torch.tanh(self.to_rgb(F.leaky_relu(x, LRELU_SLOPE)))  # (B, 3, R, R)
        a, w_audio = h, w
        if self.image_reader is not None:
            # Detached: the sound follows the picture and never steers it (no hidden code in the pixels).
            pictures = images.detach() if sound_of is None else torch.cat([images.detach(), sound_of.to(images.dtype)])
            read = self.image_reader(pictures, "JointGenerator pictures")  # (B or 2B, F)
            noise = noise if sound_of is None else noise.repeat(2, 1)
            w_audio = self.audio_style(torch.cat([read, noise.float()], dim=1))  # (B or 2B, W_DIM)
            t = cfg.trunk_resolution
            a = self.audio_fc(w_audio).view(len(read), -1, t, t)  # (B or 2B, C_trunk, T, T)
            if self.to_mel.weight.is_contiguous(memory_format=torch.channels_last):
                a = a.contiguous(memory_format=torch.channels_last)
        for block in self.audio_blocks:
            a = block(a, w_audio)
        mels = torch.tanh(self.to_mel(F.leaky_relu(a, LRELU_SLOPE)))  # (B or 2B, 1, M, M)
        return (images, mels) if sound_of is None else (images, mels[:B], mels[B:])


class _Tower(nn.Module):
    """Conv tower to 4x4, then [sum over pixels, flattened 1x1 conv]: the features keep where
    things are (image: position; spectrogram: pitch band and when the notes sound). With
    mbstd_group, the 4x4 map first gets its minibatch std (over groups of consecutive rows) as one
    more channel, mixed back in by a 3x3 conv: a generator that draws every row alike is seen."""

    def __init__(self, in_channels: int, resolution: int, base: int, max_channels: int, position_channels: int,
                 mbstd_group: int = 0):
        super().__init__()

        def channels(res: int) -> int:
            return min(max_channels, base * (resolution // res))

        self.resolution, self.in_channels = resolution, in_channels
        self.stem = nn.Conv2d(in_channels, channels(resolution), 3, padding=1)
        self.blocks = nn.ModuleList()
        res = resolution
        while res > 4:
            self.blocks.append(DownBlock(channels(res), channels(res // 2)))
            res //= 2
        self.mbstd_group = mbstd_group
        self.mbstd = nn.Conv2d(channels(4) + 1, channels(4), 3, padding=1) if mbstd_group else None
        self.to_position = nn.Conv2d(channels(4), position_channels, 1)
        self.feature_dim = channels(4) + 16 * position_channels

    def forward(self, x: torch.Tensor, what: str) -> torch.Tensor:
        check_shape(what, x, (None, self.in_channels, self.resolution, self.resolution))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        if self.mbstd is not None:
            h = self.mbstd(torch.cat([h, minibatch_std(h, self.mbstd_group)], dim=1))  # (B, C4, 4, 4)
        h = F.leaky_relu(h, LRELU_SLOPE)  # (B, C4, 4, 4)
        return torch.cat([h.sum(dim=(2, 3)), self.to_position(h).flatten(1)], dim=1).float()  # (B, F)


class JointDiscriminator(ModelMixin, ConfigMixin):
    """Scores images, sounds and (image, sound) pairs, each against the condition when cond_dim > 0."""

    @register_to_config
    def __init__(
        self,
        image_resolution: int = 32,  # Image side in pixels; a power of two >= 16.
        audio_resolution: int = 64,  # Side of the (mel bins x frames) spectrogram; a power of two >= 16.
        cond_dim: int = 0,  # Length of the pooled condition; 0 = unconditional heads (no projection terms).
        base_channels: int = 32,  # Image-branch channels at the input resolution; doubled per halving.
        audio_channels: int = 16,  # Audio-branch channels at the input resolution; doubled per halving.
        max_channels: int = 256,  # Channel cap of both branches.
        position_channels: int = 32,  # Channels of each branch's flattened 4x4 map.
        joint_dim: int = 256,  # Hidden width of the joint head's MLP over both branches' features.
        spectral_norm: bool = False,  # Spectral normalisation on every conv/linear; False = plain layers.
        cond_norm: bool = False,  # Layer-normalise the condition before the projections (blocks.normalize_condition); False = raw.
        mbstd_group: int = 0,  # Minibatch std over groups of this many consecutive rows, as an extra 4x4 channel of both branches (real and fake rows must not share a group); 0 = off.
    ):
        super().__init__()
        _check_resolution("JointDiscriminator", "image_resolution", image_resolution)
        _check_resolution("JointDiscriminator", "audio_resolution", audio_resolution)
        if mbstd_group == 1 or mbstd_group < 0:
            raise ValueError(f"JointDiscriminator: mbstd_group must be 0 (off) or >= 2, got {mbstd_group}")
        self.image = _Tower(3, image_resolution, base_channels, max_channels, position_channels, mbstd_group)
        self.audio = _Tower(1, audio_resolution, audio_channels, max_channels, position_channels, mbstd_group)
        fi, fa = self.image.feature_dim, self.audio.feature_dim
        self.joint = nn.Sequential(nn.Linear(fi + fa, joint_dim), nn.LeakyReLU(LRELU_SLOPE))
        dims = {"image": fi, "audio": fa, "joint": joint_dim}
        self.linear = nn.ModuleDict({k: nn.Linear(d, 1) for k, d in dims.items()})
        # No bias: a condition-only offset cannot tell real from fake.
        self.embed = nn.ModuleDict({k: nn.Linear(cond_dim, d, bias=False) for k, d in dims.items()}) if cond_dim else None
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    _sn(module)

    def _score(self, head: str, phi: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(device_type=phi.device.type, enabled=False):  # tiny head: keep logits in float32
            out = self.linear[head](phi.float()).squeeze(1)
            if self.embed is not None:
                out = out + (self.embed[head](cond.float()) * phi.float()).sum(dim=1)
            return out

    def forward(
        self,
        images: torch.Tensor,
        mels: torch.Tensor,
        cond: torch.Tensor | None = None,
        mismatch_cond: torch.Tensor | None = None,
        pairs: torch.Tensor | None = None,
        pair_mels: torch.Tensor | None = None,
        pair_cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """images (B, 3, R, R), mels (B, 1, M, M), cond (B, cond_dim) or None when cond_dim = 0.

        Returns {"image", "audio", "joint"}: (B,) float32 logits of the given pairs; with
        mismatch_cond (B, cond_dim) also "<head>_mismatch", the same inputs scored against those
        conditions; with pairs (P, 2) long (image row, audio row) also "pairs": (P,) joint logits
        of re-paired rows, scored against the image row's condition. pair_mels (Q, 1, M, M) are
        extra sounds for re-pairing only (no head scores them alone): audio row B + q is
        pair_mels[q]. pair_cond (P, cond_dim): the conditions to score the re-paired rows against
        instead of their image rows' (a zero row = no caption). All from ONE feature pass per
        input, so one forward serves one backward under DDP.
        """
        B = images.shape[0]
        if mels.shape[0] != B:
            raise ValueError(f"JointDiscriminator: {B} images but {mels.shape[0]} spectrograms")
        if self.embed is not None:
            if cond is None:
                raise ValueError(f"JointDiscriminator: conditioned (cond_dim={self.config.cond_dim}); cond is required")
            check_shape("JointDiscriminator cond", cond, (B, self.config.cond_dim))
            if self.config.cond_norm:  # once here, not in each of the up to seven head scores
                cond = normalize_condition(cond)
                mismatch_cond = None if mismatch_cond is None else normalize_condition(mismatch_cond)
        phi_i = self.image(images, "JointDiscriminator images")  # (B, Fi)
        phi_a = self.audio(mels, "JointDiscriminator mels")  # (B, Fa)
        phi_j = self.joint(torch.cat([phi_i, phi_a], dim=1))  # (B, J)
        phis = {"image": phi_i, "audio": phi_a, "joint": phi_j}
        out = {k: self._score(k, phi, cond) for k, phi in phis.items()}
        if mismatch_cond is not None and self.embed is not None:
            for k, phi in phis.items():
                out[f"{k}_mismatch"] = self._score(k, phi, mismatch_cond)
        if pairs is not None:
            check_shape("JointDiscriminator pairs", pairs, (None, 2))
            i, a = pairs[:, 0], pairs[:, 1]
            if pair_mels is not None:
                phi_a = torch.cat([phi_a, self.audio(pair_mels, "JointDiscriminator pair_mels")])  # (B + Q, Fa)
            phi_p = self.joint(torch.cat([phi_i[i], phi_a[a]], dim=1))  # (P, J)
            if pair_cond is not None and self.embed is not None:
                check_shape("JointDiscriminator pair_cond", pair_cond, (pairs.shape[0], self.config.cond_dim))
                pc = normalize_condition(pair_cond) if self.config.cond_norm else pair_cond
            else:
                pc = None if cond is None else cond[i]
            out["pairs"] = self._score("joint", phi_p, pc)
        return out
