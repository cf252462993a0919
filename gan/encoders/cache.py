"""Frozen text embeddings, computed once per dataset and cached next to it.

A frozen encoder gives the same output every epoch, so running MiniLM over 20k captions each epoch
would only burn CPU. Captions repeat a lot (many images share one), so only the unique texts are
encoded and stored; `index` maps every dataset row to its unique text. Token features are stored
as float16: they dominate the file and the cache's memory, and conditioning does not need more.
Positions that are padding in every text are not stored either; `lookup` pads them back, so
callers still get the encoder's full max_length.
"""

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from gan.atomic import atomic_path
from gan.encoders.base import TextEmbeddings, TextEncoder, check_prompts, pad_to_length
from gan.errors import GanError

FORMAT = "2"  # bump when the file layout changes so old caches are recomputed, not misread


@dataclass
class CachedText:
    texts: list[str]  # unique texts, in first-seen order
    index: torch.Tensor  # (N,) long: row i of the dataset -> its unique text
    pooled: torch.Tensor  # (U, D) float32
    tokens: torch.Tensor  # (U, L', Dt) float16, L' <= L: trailing all-padding positions dropped
    mask: torch.Tensor  # (U, L') bool
    max_length: int = 0  # L, the encoder's token length that lookup restores (0: keep L')

    def lookup(self, rows: torch.Tensor) -> TextEmbeddings:
        """Embeddings for a batch of dataset row ids, tokens back in float32 and (B, L, Dt)."""
        u = self.index[torch.as_tensor(rows, dtype=torch.long).cpu()]  # (B,)
        tokens, mask = pad_to_length(self.tokens[u].float(), self.mask[u], max(self.max_length, self.mask.shape[1]))
        return TextEmbeddings(pooled=self.pooled[u], tokens=tokens, mask=mask)

    def __len__(self) -> int:
        return self.index.shape[0]


def texts_fingerprint(texts: list[str]) -> str:
    # JSON keeps the boundaries between texts, so ["ab","c"] and ["a","bc"] differ
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def cache_path(cache_dir: Path, name: str, texts: list[str]) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "encoder"
    return Path(cache_dir) / f"text-{safe}-{texts_fingerprint(texts)}.safetensors"


def _unique(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    first: dict[str, int] = {}
    index = [first.setdefault(t, len(first)) for t in texts]
    return list(first), torch.tensor(index, dtype=torch.long)  # (U,), (N,)


def _read(path: Path, unique: list[str], index: torch.Tensor) -> CachedText:
    """Loads a cache file, raising ValueError if it does not match the texts it claims to hold."""
    with safe_open(path, framework="pt") as f:  # checks the header against the file size first
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or json.loads(meta.get("texts", "null")) != unique:
            raise ValueError("stored texts or format differ")
        t = {k: f.get_tensor(k) for k in ("index", "pooled", "tokens", "mask")}
        max_length = int(meta.get("max_length", "0"))
    c = CachedText(list(unique), t["index"], t["pooled"].float(), t["tokens"].half(), t["mask"].bool(), max_length)
    U = len(unique)
    if not torch.equal(c.index, index) or c.pooled.shape[0] != U or c.tokens.shape[0] != U or c.mask.shape != c.tokens.shape[:2] or c.max_length < c.mask.shape[1]:
        raise ValueError("tensor shapes do not match the texts")
    return c


def _write(path: Path, c: CachedText, encoder_name: str) -> None:
    tensors = {"index": c.index, "pooled": c.pooled.contiguous(), "tokens": c.tokens.contiguous(), "mask": c.mask.contiguous()}
    meta = {"format": FORMAT, "encoder": encoder_name, "max_length": str(c.max_length),
            "texts": json.dumps(c.texts, ensure_ascii=False)}
    with atomic_path(path) as tmp:  # readers never see half a file
        save_file(tensors, str(tmp), metadata=meta)


@torch.no_grad()
def cached_text_embeddings(
    encoder: TextEncoder,
    texts: list[str],
    cache_dir: Path,
    key: str | None = None,  # replaces encoder.name in the file name (e.g. to add a revision)
    batch_size: int = 256,
    progress: bool = True,
) -> CachedText:
    """Embeddings of every text, from cache_dir if an earlier call stored them, else encoded once."""
    if encoder.trainable:
        raise GanError(f"text encoder '{encoder.name}' trains with the GAN, so its embeddings cannot be cached")
    texts = check_prompts(texts)
    name = key or encoder.name
    path = cache_path(cache_dir, name, texts)
    unique, index = _unique(texts)
    if path.is_file():
        try:
            return _read(path, unique, index)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
            warnings.warn(f"text embedding cache {path} is unreadable or stale ({e}); recomputing it")
    pooled, tokens, masks = [], [], []
    for i in tqdm(range(0, len(unique), batch_size), desc=f"encoding texts ({name})", disable=not progress):
        out = encoder.encode(unique[i : i + batch_size])
        pooled.append(out.pooled.float().cpu())  # (b, D)
        tokens.append(out.tokens.half().cpu())  # (b, L, Dt)
        masks.append(out.mask.bool().cpu())  # (b, L)
    mask = torch.cat(masks)  # (U, L)
    used = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1  # L': last position any text uses
    tokens = torch.cat(tokens)[:, :used].contiguous()  # (U, L', Dt)
    c = CachedText(unique, index, torch.cat(pooled), tokens, mask[:, :used].contiguous(), mask.shape[1])
    _write(path, c, name)
    return c
