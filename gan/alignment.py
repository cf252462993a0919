"""`gan align`: train an audio or image encoder to map into the text encoder's embedding space.

Each training pair is (a clip or picture, its caption). The student encoder's pooled vector and
the frozen text encoder's sentence vector are compared by cosine similarity, and a symmetric
InfoNCE loss (CLIP's) pulls matching pairs together and pushes the batch's other captions away.
Afterwards a generator trained only on text can be driven by a sound or a picture with no
retraining: its embedding lands where the matching caption's would (the Sound2Scene / wav2clip
route). Captions of the built-in data repeat attribute combinations, so in-batch "negatives" that
share all four attributes with the positive are masked out of the loss rather than pushed away.

Retrieval on the test split measures it: for each clip (picture), the nearest caption among all
test captions; top-1 counts when that caption names the same four attributes (captions are
reworded, so "same text" would punish synonyms), and the exact-row rate is reported alongside.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gan import losses
from gan.data.metadata import read_metadata
from gan.encoders import build_text_encoder
from gan.encoders.cache import cached_text_embeddings
from gan.errors import GanError

MODALITIES = ("audio", "image")


def _attribute_keys(rows: list[dict]) -> torch.Tensor | None:
    """(N,) id of each row's attribute combination, or None when rows carry no attributes."""
    if not all(isinstance(r.get("attributes"), dict) for r in rows):
        return None
    combos: dict[tuple, int] = {}
    return torch.tensor([combos.setdefault(tuple(sorted(r["attributes"].items())), len(combos)) for r in rows])


class _Inputs:
    """The student's inputs for a split: int16 clips or uint8 images, indexed by row."""

    def __init__(self, split: Path, rows: list[dict], modality: str, encoder, progress: bool):
        self.modality = modality
        if modality == "audio":
            from gan.data.audio_bank import audio_bank

            cfg = encoder.config
            self.data = audio_bank(split, rows, cfg.sample_rate, cfg.clip_seconds, progress=progress)  # (N, T)
        else:
            from gan.data.dataset import ImageTextDataset

            ds = ImageTextDataset(split, encoder.config.resolution)
            self.data = ds.images[torch.tensor(ds.image_of_row)]  # (N, 3, R, R) uint8

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.data[idx]
        return x.float() / 32767.0 if self.modality == "audio" else x.float() / 127.5 - 1.0


def build_student(modality: str, pooled_dim: int, resolution: int = 32, width: int = 32):
    if modality == "audio":
        from gan.encoders.audio import AudioEncoder

        return AudioEncoder(pooled_dim=pooled_dim, width=width)
    from gan.encoders.image import ImageEncoder

    return ImageEncoder(resolution=resolution, pooled_dim=pooled_dim, channels=(width, 2 * width, 4 * width, 8 * width))


@torch.no_grad()
def embed_all(student, inputs: _Inputs, batch_size: int = 256) -> torch.Tensor:
    student.eval()
    out = [student(inputs.batch(torch.arange(i, min(i + batch_size, len(inputs.data))))).pooled
           for i in range(0, len(inputs.data), batch_size)]
    return F.normalize(torch.cat(out).float(), dim=-1)  # (N, D)


def retrieval(student_emb: torch.Tensor, text_emb: torch.Tensor, keys: torch.Tensor | None) -> dict:
    """Top-1 retrieval of captions from the student's embeddings (both (N, D), unit length)."""
    nearest = (student_emb @ F.normalize(text_emb, dim=-1).T).argmax(1)  # (N,)
    rows = torch.arange(len(nearest))
    out = {"top1_exact_row": (nearest == rows).float().mean().item(), "count": len(nearest)}
    if keys is not None:
        out["top1_same_attributes"] = (keys[nearest] == keys).float().mean().item()
        out["chance_same_attributes"] = (torch.bincount(keys).float() ** 2).sum().item() / len(keys) ** 2
    return out


def align(data: str, modality: str, out: str, *, test: str | None = None, text_encoder: str = "minilm",
          steps: int = 1500, batch_size: int = 128, lr: float = 1e-3, temperature: float = 0.07,
          width: int = 32, seed: int = 0, progress: bool = True) -> dict:
    if modality not in MODALITIES:
        raise GanError(f"--modality: expected one of {', '.join(MODALITIES)}, got {modality!r}")
    split = Path(data)
    if not (split / "metadata.jsonl").is_file():
        raise GanError(f"--data {data}: expected a split folder with metadata.jsonl (e.g. datasets/shapes/train)")
    torch.manual_seed(seed)
    teacher = build_text_encoder(text_encoder)
    if teacher.trainable:
        raise GanError("--text-encoder: alignment needs a frozen (pretrained) text encoder, not 'learned'")
    rows = read_metadata(split)
    texts = cached_text_embeddings(teacher, [r["text"] for r in rows], split.parent / ".cache", progress=progress)
    target = texts.pooled[texts.index]  # (N, D) unit-length caption vectors
    keys = _attribute_keys(rows)
    resolution = int(_image_size(split, rows)) if modality == "image" else 32
    student = build_student(modality, target.shape[1], resolution, width)
    inputs = _Inputs(split, rows, modality, student, progress)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    history, started = [], time.time()
    student.train()
    bar = tqdm(range(steps), desc=f"align {modality}", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(rows), (batch_size,), generator=g)
        emb = student(inputs.batch(idx)).pooled
        same = None if keys is None else keys[idx][:, None] == keys[idx][None, :]
        loss = losses.info_nce(emb, target[idx], temperature, positives=same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    result = {"modality": modality, "text_encoder": text_encoder, "train": str(split), "steps": steps,
              "batch_size": batch_size, "temperature": temperature, "seed": seed,
              "seconds": round(time.time() - started, 1), "loss": history}
    if test:
        test_split = Path(test)
        test_rows = read_metadata(test_split)
        t = cached_text_embeddings(teacher, [r["text"] for r in test_rows], test_split.parent / ".cache",
                                   progress=progress)
        emb = embed_all(student, _Inputs(test_split, test_rows, modality, student, progress))
        result["test_retrieval"] = retrieval(emb, t.pooled[t.index], _attribute_keys(test_rows))
        result["test"] = str(test_split)
    folder = Path(out)
    student.eval()
    student.save_pretrained(folder / "encoder")
    # The caption bank of the retrieval route (Conditioner.add_aligned(..., route="caption")):
    # every distinct training caption and its sentence vector, a few MB.
    from safetensors.torch import save_file

    save_file({"pooled": texts.pooled.contiguous()}, str(folder / "captions.safetensors"))
    (folder / "captions.json").write_text(json.dumps(texts.texts))
    (folder / "align.json").write_text(json.dumps(result, indent=2))
    return result


def _image_size(split: Path, rows: list[dict]) -> int:
    from PIL import Image

    with Image.open(split / rows[0]["file_name"]) as im:
        return im.size[0]
