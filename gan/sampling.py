"""Generate images from an exported generator: no dataset and no training config needed.

An export folder holds the EMA generator (`save_pretrained`: config.json + safetensors) and
`condition.json`, which says how to re-create the condition encoder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gan.errors import GanError
from gan.models.generator import ConditionalGenerator
from gan.weights import load_model_folder

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


def export_task(path: str | Path) -> str:
    """The task an export was trained for (condition.json's "task"; older exports: text-to-image)."""
    import json

    folder = resolve_export(path)
    try:
        return json.loads((folder / CONDITION_FILE).read_text()).get("task", "text-to-image")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise GanError(f"{folder}/{CONDITION_FILE}: unreadable ({e}); re-export the generator") from None


def check_prompts(prompts: list[str]) -> list[str]:
    if not prompts:
        raise GanError("no prompt given: pass --prompt TEXT (repeatable) or --prompt-file FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise GanError(f"prompt {i + 1} is empty; every prompt needs some text")
    return prompts


class Sampler:
    """Conditions (captions, sounds, pictures) -> images, with a generator and its Conditioner."""

    def __init__(self, generator: ConditionalGenerator, conditioner, device: str | torch.device = "cpu"):
        self.generator = generator.eval().to(device)
        self.conditioner = conditioner
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "Sampler":
        from gan.conditioning import Conditioner, read_condition_spec

        folder = resolve_export(path)
        conditioner = Conditioner.from_export(folder, read_condition_spec(folder))
        try:
            generator = load_model_folder(ConditionalGenerator, folder, "generator")
        except (OSError, ValueError, RuntimeError) as e:
            raise GanError(f"{folder}: cannot load the generator weights: {e}") from None
        return cls(generator, conditioner, device)

    @property
    def resolution(self) -> int:
        return self.generator.config.resolution

    @property
    def modalities(self) -> list[str]:
        return self.conditioner.modalities

    def _run(self, z: torch.Tensor, emb) -> torch.Tensor:
        """z (B, Z) and B embeddings -> (B, 3, R, R) on the CPU."""
        dev = self.device
        # float(): a conditioner prepared by accelerate for mixed precision returns bf16/fp16
        tokens = None if emb.tokens is None else emb.tokens.to(dev).float()
        mask = None if emb.mask is None else emb.mask.to(dev)
        return self.generator(z.to(dev), emb.pooled.to(dev).float(), tokens, mask).float().cpu()

    def condition(self, texts=None, audio=None, images=None, weights=None):
        """User inputs -> the condition; lists are paired element-wise (see Conditioner.encode)."""
        if texts:
            check_prompts(texts)
        return self.conditioner.encode(texts=texts, audio=audio, images=images, weights=weights)

    @torch.no_grad()
    def generate(self, prompts: list[str], num: int, seed: int = 0, truncation: float | None = None,
                 batch_size: int = 64) -> torch.Tensor:
        """(P, num, 3, R, R) images in [-1, 1] for P prompts (see generate_from)."""
        check_prompts(prompts)
        return self.generate_from(self.condition(texts=list(prompts)), num, seed, truncation, batch_size)

    @torch.no_grad()
    def generate_from(self, emb, num: int, seed: int = 0, truncation: float | None = None,
                      batch_size: int = 64) -> torch.Tensor:
        """(P, num, 3, R, R) for P conditions. Column j uses the same noise for every condition,
        so a grid compares conditions at fixed noise; the result depends only on `seed`."""
        if num < 1:
            raise GanError(f"--num must be at least 1, got {num}")
        g = torch.Generator().manual_seed(seed)
        z = ConditionalGenerator.sample_noise(num, self.generator.config.z_dim, g, truncation)  # (N, Z)
        out = []
        for p in range(len(emb.pooled)):
            rows = []
            for lo in range(0, num, batch_size):
                n = min(batch_size, num - lo)
                rows.append(self._run(z[lo:lo + n], _repeat(emb, p, n)))
            out.append(torch.cat(rows))
        return torch.stack(out)

    def row_inputs(self, rows: list[dict], folder: Path, modalities: list[str] | None = None) -> dict:
        """The condition inputs of metadata rows: their captions, audio files and/or image files."""
        fields = {"text": ("texts", "text"), "audio": ("audio", "audio_file"), "image": ("images", "file_name")}
        out = {}
        for m in modalities or self.modalities:
            key, field = fields[m]
            missing = [i for i, r in enumerate(rows) if not isinstance(r.get(field), str)]
            if missing:
                raise GanError(f"{folder}/metadata.jsonl: conditioning on {m} needs '{field}' on every row; "
                               f"missing on {len(missing)} row(s)")
            out[key] = [r[field] if m == "text" else str(Path(folder) / r[field]) for r in rows]
        return out

    @torch.no_grad()
    def generate_each(self, prompts: list[str], seed: int = 0, truncation: float | None = None,
                      batch_size: int = 64) -> torch.Tensor:
        """One image per prompt, (P, 3, R, R): for evaluating against a list of captions."""
        check_prompts(prompts)
        g = torch.Generator().manual_seed(seed)
        z = ConditionalGenerator.sample_noise(len(prompts), self.generator.config.z_dim, g, truncation)
        return self.generate_with_noise({"texts": list(prompts)}, z, batch_size)

    @torch.no_grad()
    def generate_with_noise(self, inputs: dict, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Image i from condition i (inputs: texts/audio/images lists, paired) and noise z[i]:
        (N, 3, R, R). A shard of an evaluation set passes its own rows of one seeded noise
        matrix, so sharding never changes an image."""
        n = len(z)
        if any(len(v) != n for v in inputs.values()):
            raise ValueError(f"generate_with_noise: {[len(v) for v in inputs.values()]} inputs for {n} noise vectors")
        out = []
        for lo in range(0, n, batch_size):
            part = {k: v[lo:lo + batch_size] for k, v in inputs.items()}
            out.append(self._run(z[lo:lo + batch_size], self.condition(**part)))
        return torch.cat(out)


def _repeat(emb, p: int, n: int):
    """The embeddings of condition p, repeated n times along the batch."""
    def rep(t, *rest):
        return None if t is None else t[p:p + 1].expand(n, *rest)
    return type(emb)(pooled=rep(emb.pooled, -1), tokens=rep(emb.tokens, -1, -1), mask=rep(emb.mask, -1))


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
