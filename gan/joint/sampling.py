"""Sample (image, sound) pairs from an exported joint generator, and write them for people.

`gan sample` on a joint run writes NNNN.png + NNNN.wav (+ NNNN.mel.png, the spectrogram G drew)
and index.html, a static page showing each picture with an audio player beside it. Needs only
the export folder: the mel settings that turn spectrograms into sound live in the generator's
config.json, the caption encoder's recipe in condition.json, and a captioned model's training
captions in captions.json.

Without a prompt a captioned model is sampled as class-conditional GANs are sampled "unconditionally":
each pair gets a training caption drawn at random (its marginal over the captions it learned). The
"no caption" condition that caption dropout trains is the other choice (`unprompted="none"`); on the
built-in data it is a weak, collapsed mode next to the captioned one (see BENCHMARKS.md).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from gan.errors import GanError
from gan.joint.mel import MelSettings, mel_to_waveform
from gan.joint.models import JointGenerator
from gan.sampling import check_prompts, resolve_export, to_pil
from gan.weights import load_model_folder

CAPTIONS_FILE = "captions.json"
CAPTION_BANK_LIMIT = 10_000  # more training rows than this: a seeded uniform draw of them keeps the marginal
UNPROMPTED = ("captions", "none")


def write_caption_bank(folder: str | Path, texts: list[str], seed: int = 0, limit: int = CAPTION_BANK_LIMIT) -> Path:
    """The training captions (one per row, repeats kept so the draw follows the data) into captions.json."""
    if len(texts) > limit:
        keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        texts = [texts[i] for i in keep.tolist()]
    path = Path(folder) / CAPTIONS_FILE
    path.write_text(json.dumps({"what": "training captions; gan sample draws from them when no --prompt is given",
                                "captions": list(texts)}), encoding="utf-8")
    return path


def read_caption_bank(folder: str | Path) -> list[str] | None:
    """captions.json's captions; None when the export has none (unconditional, or exported before it existed)."""
    path = Path(folder) / CAPTIONS_FILE
    if not path.is_file():
        return None
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))["captions"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise GanError(f"{path}: unreadable caption bank ({e!r}); expected {{\"captions\": [\"...\", ...]}}") from None
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise GanError(f"{path}: \"captions\" must be a non-empty list of non-empty strings")
    return captions


class Caption(NamedTuple):
    """A batch of caption conditions: pooled (N, D); tokens (N, L, Dt) and mask (N, L) bool for a
    generator that attends to words, else None. "No caption" is a zero pooled vector and no real token."""
    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def row(self, i: int, n: int) -> "Caption":
        """Caption i repeated n times."""
        pick = lambda t, *rest: None if t is None else t[i:i + 1].expand(n, *rest)  # noqa: E731
        return Caption(pick(self.pooled, -1), pick(self.tokens, -1, -1), pick(self.mask, -1))


class JointSampler:
    """Noise (+ optional captions) -> images (N, 3, R, R) and spectrograms (N, 1, M, M) -> waveforms."""

    def __init__(self, generator: JointGenerator, conditioner=None, device: str | torch.device = "cpu",
                 captions: list[str] | None = None):
        self.generator = generator.eval().to(device)
        self.conditioner = conditioner
        self.captions = captions  # training captions drawn from when no prompt is given; None = none exported
        self.device = torch.device(device)
        self.mel = MelSettings.from_dict(generator.config.mel) if generator.config.mel else MelSettings()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "JointSampler":
        from gan.conditioning import Conditioner, read_condition_spec

        folder = resolve_export(path)
        spec = read_condition_spec(folder)
        if spec.get("task") != "joint":
            raise GanError(f"{folder}: a {spec.get('task', 'text-to-image')} generator, not a joint one")
        conditioner = Conditioner.from_export(folder, spec) if spec.get("modalities") else None
        try:
            generator = load_model_folder(JointGenerator, folder, "joint generator")
        except (OSError, ValueError, RuntimeError) as e:
            raise GanError(f"{folder}: cannot load the joint generator weights: {e}") from None
        return cls(generator, conditioner, device, read_caption_bank(folder) if conditioner is not None else None)

    def draw_captions(self, num: int, seed: int) -> list[str]:
        """num training captions drawn uniformly with replacement; the draw depends only on seed."""
        if not self.conditioned:
            raise GanError("this joint generator was trained without captions; it has none to draw")
        if not self.captions:
            raise GanError(f"this export has no {CAPTIONS_FILE} (exported before it existed); give --prompt "
                           "or use --unprompted none")
        g = torch.Generator().manual_seed(seed + 1)  # its own stream: the noise of pair j is the same either way
        return [self.captions[i] for i in torch.randint(len(self.captions), (num,), generator=g).tolist()]

    @property
    def conditioned(self) -> bool:
        return self.generator.config.cond_dim > 0

    def condition(self, prompts: list[str] | None, n: int) -> Caption | None:
        """The captions' condition (one row per prompt); the "no caption" condition it was trained
        with (zero pooled vector, no real word token), n rows, when no prompt is given; None for an
        unconditional model."""
        if not self.conditioned:
            if prompts:
                raise GanError("this joint generator was trained without captions; drop --prompt")
            return None
        cfg = self.generator.config
        if not prompts:
            none = torch.zeros(n, cfg.cond_dim)
            if cfg.token_dim is None:
                return Caption(none)
            return Caption(none, torch.zeros(n, 1, cfg.token_dim), torch.zeros(n, 1, dtype=torch.bool))
        check_prompts(prompts)
        emb = self.conditioner.encode(texts=list(prompts))
        if cfg.token_dim is None:
            return Caption(emb.pooled.float())
        return Caption(emb.pooled.float(), emb.tokens.float(), emb.mask)

    @torch.no_grad()
    def generate(self, prompts: list[str] | None, num: int, seed: int = 0, truncation: float | None = None,
                 batch_size: int = 64, unprompted: str = "captions") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """`num` pairs per prompt (or `num` pairs without a prompt): images, mels, and a label per pair.
        Pair j of every prompt uses the same noise, and the result depends only on `seed`. Without a
        prompt a captioned model conditions pair j on a drawn training caption (unprompted="captions",
        falling back to the no-caption condition for exports without captions.json) or on the
        no-caption condition ("none")."""
        if num < 1:
            raise GanError(f"--num must be at least 1, got {num}")
        if unprompted not in UNPROMPTED:
            raise GanError(f"--unprompted must be one of {', '.join(UNPROMPTED)}, got {unprompted!r}")
        g = torch.Generator().manual_seed(seed)
        z = JointGenerator.sample_noise(num, self.generator.config.z_dim, g, truncation)  # (num, Z)
        if not prompts and self.conditioned and unprompted == "captions" and self.captions:
            drawn = self.draw_captions(num, seed)
            return (*self.run_paired(z, drawn, batch_size), drawn)
        groups = list(prompts) if prompts else [None]
        cond = self.condition(prompts, 1)  # (P, D) or (1, D) zeros or None
        images, mels, labels = [], [], []
        for p, prompt in enumerate(groups):
            for lo in range(0, num, batch_size):
                zb = z[lo:lo + batch_size]
                im, mel = self.run(zb, None if cond is None else cond.row(p, len(zb)))
                images.append(im)
                mels.append(mel)
            labels += [prompt or ""] * num
        return torch.cat(images), torch.cat(mels), labels

    def run_paired(self, z: torch.Tensor, prompts: list[str] | None, batch_size: int = 64, progress: bool = False,
                   desc: str = "generating") -> tuple[torch.Tensor, torch.Tensor]:
        """Pair i from noise z[i] (N, Z) and prompts[i] (None: the no-caption condition), in batches."""
        from tqdm.auto import tqdm

        images, mels = [], []
        for lo in tqdm(range(0, len(z), batch_size), desc=desc, disable=not progress):
            zb = z[lo:lo + batch_size]
            im, mel = self.run(zb, self.condition(prompts[lo:lo + batch_size] if prompts else None, len(zb)))
            images.append(im)
            mels.append(mel)
        return torch.cat(images), torch.cat(mels)

    @torch.no_grad()  # without it every batch's outputs kept their autograd graph: ~5 MB per pair
    def run(self, z: torch.Tensor, cond: Caption | None) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        to = lambda t: None if t is None else t.to(dev)  # noqa: E731
        if cond is None:
            im, mel = self.generator(z.to(dev))
        else:
            im, mel = self.generator(z.to(dev), cond.pooled.to(dev).float(), to(cond.tokens), to(cond.mask))
        return im.float().cpu(), mel.float().cpu()

    def waveforms(self, mels: torch.Tensor, iters: int = 32, progress: bool = False, desc: str = "sounds") -> torch.Tensor:
        """(N, 1, M, M) -> (N, T) float32 in [-1, 1]: the KL inverse mel, then Griffin-Lim (fixed phase seed)."""
        return mel_to_waveform(mels, self.mel, n_iter=iters, progress=progress, desc=desc)


def mel_picture(mel: torch.Tensor, scale: int = 2) -> Image.Image:
    """(1, M, F) normalised log-mel -> a PIL image, low frequencies at the bottom as people read them."""
    arr = ((mel[0].flip(0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()  # (M, F)
    # a dark-to-warm ramp: louder is brighter and redder, silence stays black
    rgb = np.stack([arr, (arr.astype(np.float32) ** 1.5 / 255 ** 0.5).astype(np.uint8), (arr // 3)], axis=-1)
    im = Image.fromarray(rgb, "RGB")
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)


def write_pairs(images: torch.Tensor, mels: torch.Tensor, waves: torch.Tensor, sample_rate: int,
                labels: list[str], out: str | Path, scale: int = 4) -> list[tuple[Path, Path]]:
    """NNNN.png, NNNN.wav, NNNN.mel.png for each pair, and index.html linking them all."""
    from gan.data.audio import write_wav

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (len(images) == len(mels) == len(waves) == len(labels)):
        raise GanError(f"write_pairs: {len(images)} images, {len(mels)} spectrograms, {len(waves)} sounds and "
                       f"{len(labels)} labels; expected one of each per pair")
    rows, written = [], []
    for i in range(len(images)):
        stem = f"{i:04d}"
        png, wav, mel_png = out / f"{stem}.png", out / f"{stem}.wav", out / f"{stem}.mel.png"
        im = to_pil(images[i])  # to_pil takes [-1, 1]: uint8 pixels would all clamp to white
        im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST).save(png)
        write_wav(wav, waves[i].numpy(), sample_rate)
        mel_picture(mels[i]).save(mel_png)
        written.append((png, wav))
        rows.append(f'<figure><img src="{png.name}" alt="image {stem}"><img src="{mel_png.name}" alt="spectrogram {stem}">'
                    f'<figcaption>{stem} {html.escape(labels[i])}</figcaption>'
                    f'<audio controls preload="none" src="{wav.name}"></audio></figure>')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>joint samples</title><style>"
            "body{font-family:sans-serif;background:#222;color:#eee}figure{display:inline-block;margin:8px;"
            "text-align:center}img{image-rendering:pixelated;margin:2px;height:128px}audio{width:260px;display:block}"
            "</style></head><body><h1>Joint samples: image, spectrogram, sound</h1>\n"
            + "\n".join(rows) + "\n</body></html>\n")
    (out / "index.html").write_text(page, encoding="utf-8")
    return written


def preview(images: torch.Tensor, mels: torch.Tensor, labels: list[str] | None = None) -> Image.Image:
    """Images on top, their spectrograms underneath: the training-time sample grid of joint runs."""
    from gan.sampling import labelled_grid

    top = labelled_grid(images.unsqueeze(0), None, scale=2)
    bottom = Image.new("RGB", (top.width, mels.shape[-2] * 2 + 4))
    step = top.width // len(mels)
    for i, mel in enumerate(mels):
        pic = mel_picture(mel, scale=2)
        bottom.paste(pic.resize((min(step, pic.width), pic.height)), (i * step, 2))
    page = Image.new("RGB", (top.width, top.height + bottom.height))
    page.paste(top, (0, 0))
    page.paste(bottom, (0, top.height))
    return page
