"""A small text encoder trained jointly with the GAN, for closed-vocabulary captions.

The built-in shapes captions use a few dozen words; a pretrained 22M-parameter encoder is overkill
there and a tiny embedding + bidirectional GRU learns exactly the distinctions the data has.
The tokenizer is deliberately plain (lowercase, regex words, a vocabulary from the training
captions) so it is reproducible from vocab.json alone.
"""

import json
import re
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gan.encoders.base import TextEmbeddings, TextEncoder, check_prompts
from gan.errors import GanError
from gan.weights import load_model_folder

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1
WORD_RE = re.compile(r"[a-z0-9]+")  # punctuation carries nothing in captions, so it is dropped
SUBFOLDER = "text_encoder"


def tokenize(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def build_vocab(texts: list[str], min_count: int = 1) -> dict[str, int]:
    """word -> id, with <pad>=0 and <unk>=1; words sorted so the same captions give the same ids."""
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted(w for w, c in counts.items() if c >= min_count)
    if not words:
        raise GanError(f"learned text encoder: no word appears at least {min_count} time(s) in the training captions")
    return {PAD: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(words)}}


class LearnedTextEncoder(ModelMixin, ConfigMixin, TextEncoder):
    name = "learned"
    trainable = True

    @register_to_config
    def __init__(
        self,
        vocab_size: int,  # len(vocab), <pad> and <unk> included
        embed_dim: int = 128,  # word embedding width
        token_dim: int = 128,  # Dt: per-token feature width (both GRU directions concatenated)
        pooled_dim: int = 128,  # D: sentence vector width
        max_length: int = 32,  # L: longer captions are truncated, shorter ones padded
    ):
        super().__init__()
        if token_dim % 2:
            raise GanError(f"learned text encoder: token_dim must be even (two GRU directions), got {token_dim}")
        self.vocab: dict[str, int] | None = None  # set by from_texts / load; not a weight
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, token_dim // 2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(token_dim)
        self.proj = nn.Linear(token_dim, pooled_dim)

    # the TextEncoder attributes, read from the config so they cannot drift from the weights
    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @property
    def pooled_dim(self) -> int:
        return self.config.pooled_dim

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @classmethod
    def from_texts(cls, texts: list[str], min_count: int = 1, **config) -> "LearnedTextEncoder":
        vocab = build_vocab(check_prompts(texts), min_count)
        model = cls(vocab_size=len(vocab), **config)
        model.vocab = vocab
        return model

    def token_ids(self, texts: list[str]) -> torch.Tensor:
        """(B, L) long ids; unknown words -> <unk>, and a prompt with no words becomes one <unk>."""
        if self.vocab is None:
            raise GanError("learned text encoder: no vocabulary; build it with from_texts() or load()")
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)  # (B, L) all <pad>
        for i, t in enumerate(texts):
            row = [self.vocab.get(w, 1) for w in tokenize(t)][: self.max_length] or [1]
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    def forward(self, ids: torch.Tensor) -> TextEmbeddings:
        B, L = ids.shape
        mask = ids != 0  # (B, L)
        lengths = mask.sum(1).clamp_min(1)  # (B,)
        x = self.embed(ids)  # (B, L, E)
        # packing keeps the backward direction from reading the padding first
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=L)  # (B, L, Dt)
        tokens = self.norm(h) * mask.unsqueeze(-1)  # (B, L, Dt), zeros at padding
        mean = tokens.sum(1) / lengths.unsqueeze(-1)  # (B, Dt) masked mean
        pooled = self.proj(mean)  # (B, D)
        return TextEmbeddings(pooled=pooled, tokens=tokens, mask=mask)

    def encode(self, texts: list[str]) -> TextEmbeddings:
        # no torch.no_grad here: in training mode the GAN loss trains this encoder
        return self(self.token_ids(check_prompts(texts)).to(self.device))

    def export(self, folder: Path) -> dict:
        out = Path(folder) / SUBFOLDER
        self.save_pretrained(out)
        (out / "vocab.json").write_text(json.dumps(self.vocab, indent=0))
        return {"type": "learned", "path": SUBFOLDER}

    @classmethod
    def load(cls, folder: Path, subfolder: str = SUBFOLDER) -> "LearnedTextEncoder":
        path = Path(folder) / subfolder
        vocab_file = path / "vocab.json"
        if not (path / "config.json").is_file() or not vocab_file.is_file():
            raise GanError(f"learned text encoder: {path} needs config.json, the weights and vocab.json (written by export)")
        try:
            vocab = json.loads(vocab_file.read_text())
        except json.JSONDecodeError as e:
            raise GanError(f"learned text encoder: {vocab_file} is not valid JSON: {e}") from e
        model = load_model_folder(cls, path, "learned text encoder")
        if not isinstance(vocab, dict) or len(vocab) != model.config.vocab_size or vocab.get(PAD) != 0:
            raise GanError(
                f"learned text encoder: {vocab_file} should map {model.config.vocab_size} words to ids with <pad>=0"
            )
        model.vocab = vocab
        return model.eval()
