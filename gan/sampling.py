"""Generate images from an exported generator: no dataset and no training config needed.

An export folder holds the EMA generator (`save_pretrained`: config.json + safetensors) and
`condition.json`, which says how to re-create the condition encoder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gan.encoders import TextEncoder, load_text_encoder
from gan.errors import GanError
from gan.models.generator import ConditionalGenerator

CONDITION_FILE = "condition.json"


def resolve_export(path: str | Path) -> Path:
    """A run folder (-> its generator/ export) or an export folder itself."""
    path = Path(path)
    if not path.exists():
        raise GanError(f"--checkpoint {path}: no such folder")
    for candidate in (path / "generator", path):
        if (candidate / "config.json").is_file() and (candidate / CONDITION_FILE).is_file():
            return candidate
    raise GanError(
        f"--checkpoint {path}: not a checkpoint. Expected a run folder containing generator/ or an "
        f"exported generator folder with config.json and {CONDITION_FILE} (written by train_gan.py)")


def check_prompts(prompts: list[str]) -> list[str]:
    if not prompts:
        raise GanError("no prompt given: pass --prompt TEXT (repeatable) or --prompt-file FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise GanError(f"prompt {i + 1} is empty; every prompt needs some text")
    return prompts


class Sampler:
    """Text → images with a generator and its condition encoder."""

    def __init__(self, generator: ConditionalGenerator, encoder: TextEncoder, use_tokens: bool,
                 device: str | torch.device = "cpu"):
        self.generator = generator.eval().to(device)
        self.encoder = encoder
        self.use_tokens = use_tokens
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "Sampler":
        folder = resolve_export(path)
        try:
            spec = json.loads((folder / CONDITION_FILE).read_text())
            text_spec, use_tokens = spec["text_encoder"], bool(spec["use_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise GanError(f"{folder / CONDITION_FILE}: malformed ({e}); re-export the generator") from None
        try:
            generator = ConditionalGenerator.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as e:
            raise GanError(f"{folder}: cannot load the generator weights: {e}") from None
        return cls(generator, load_text_encoder(text_spec, folder), use_tokens, device)

    @property
    def resolution(self) -> int:
        return self.generator.config.resolution

    def _run(self, z: torch.Tensor, emb) -> torch.Tensor:
        """z (B, Z) and B embeddings -> (B, 3, R, R) on the CPU."""
        dev = self.device
        tokens = mask = None
        if self.use_tokens:
            tokens, mask = emb.tokens.to(dev), emb.mask.to(dev)
        return self.generator(z.to(dev), emb.pooled.to(dev), tokens, mask).float().cpu()

    @torch.no_grad()
    def generate(self, prompts: list[str], num: int, seed: int = 0, truncation: float | None = None,
                 batch_size: int = 64) -> torch.Tensor:
        """(P, num, 3, R, R) images in [-1, 1]. Column j uses the same noise for every prompt,
        so a grid compares prompts at fixed noise; the result depends only on `seed`."""
        check_prompts(prompts)
        if num < 1:
            raise GanError(f"--num must be at least 1, got {num}")
        g = torch.Generator().manual_seed(seed)
        z = ConditionalGenerator.sample_noise(num, self.generator.config.z_dim, g, truncation)  # (N, Z)
        emb = self.encoder.encode(list(prompts))  # all prompts in one encoder pass
        out = []
        for p in range(len(prompts)):
            rows = []
            for lo in range(0, num, batch_size):
                n = min(batch_size, num - lo)
                rows.append(self._run(z[lo:lo + n], _repeat(emb, p, n)))
            out.append(torch.cat(rows))
        return torch.stack(out)

    @torch.no_grad()
    def generate_each(self, prompts: list[str], seed: int = 0, truncation: float | None = None,
                      batch_size: int = 64) -> torch.Tensor:
        """One image per prompt, (P, 3, R, R): for evaluating against a list of captions."""
        check_prompts(prompts)
        g = torch.Generator().manual_seed(seed)
        z = ConditionalGenerator.sample_noise(len(prompts), self.generator.config.z_dim, g, truncation)
        return self.generate_with_noise(prompts, z, batch_size)

    @torch.no_grad()
    def generate_with_noise(self, prompts: list[str], z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Image i from prompts[i] and noise z[i]: (P, 3, R, R). A shard of an evaluation set
        passes its own rows of one seeded noise matrix, so sharding never changes an image."""
        if len(prompts) != len(z):
            raise ValueError(f"generate_with_noise: {len(prompts)} prompts for {len(z)} noise vectors")
        out = [self._run(z[lo:lo + batch_size], self.encoder.encode(prompts[lo:lo + batch_size]))
               for lo in range(0, len(prompts), batch_size)]
        return torch.cat(out)


def _repeat(emb, p: int, n: int):
    """The embeddings of prompt p, repeated n times along the batch."""
    return type(emb)(pooled=emb.pooled[p:p + 1].expand(n, -1), tokens=emb.tokens[p:p + 1].expand(n, -1, -1),
                     mask=emb.mask[p:p + 1].expand(n, -1))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] -> uint8, rounded exactly as the saved PNG files are."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB PIL image."""
    arr = to_uint8(image).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def labelled_grid(images: torch.Tensor, labels: list[str] | None = None, scale: int = 2,
                  pad: int = 2) -> Image.Image:
    """(P, N, 3, H, W) -> one image: a row per prompt, its label on the left."""
    p, n, _, h, w = images.shape
    h, w = h * scale, w * scale
    font = ImageFont.load_default()
    label_w = 0
    if labels:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        label_w = max(int(probe.textlength(t, font=font)) for t in labels) + 8
    grid = Image.new("RGB", (label_w + n * (w + pad) + pad, p * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i in range(p):
        y = pad + i * (h + pad)
        if labels:
            draw.text((4, y + h // 2 - 6), labels[i], fill=(0, 0, 0), font=font)
        for j in range(n):
            tile = to_pil(images[i, j]).resize((w, h), Image.NEAREST)
            grid.paste(tile, (label_w + pad + j * (w + pad), y))
    return grid


def slug(text: str, index: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-")
    return f"{index:02d}-{words or 'prompt'}"


def save_samples(images: torch.Tensor, prompts: list[str], out: Path) -> list[Path]:
    """One prompt: NNNN.png in `out`. Several: a sub-folder per prompt and a labelled grid.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    folders = [out] if len(prompts) == 1 else [out / slug(t, i) for i, t in enumerate(prompts)]
    for folder, row in zip(folders, images):
        folder.mkdir(parents=True, exist_ok=True)
        for j, img in enumerate(row):
            path = folder / f"{j:04d}.png"
            to_pil(img).save(path)
            written.append(path)
    if len(prompts) > 1:
        labelled_grid(images, prompts).save(out / "grid.png")
        (out / "prompts.txt").write_text("\n".join(prompts) + "\n")
        written.append(out / "grid.png")
    return written
