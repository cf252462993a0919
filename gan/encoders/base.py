"""The condition-encoder interface: texts in, a sentence vector plus token features out.

Every text encoder (frozen MiniLM, any HuggingFace text model, or the small learned one) returns
the same `TextEmbeddings`, so generators and discriminators never care which one is in use.
Token features are always padded to the encoder's `max_length`, which keeps shapes fixed across
batches (the embedding cache stacks them, cross-attention layers can size themselves once).
"""

import abc
from dataclasses import dataclass
from pathlib import Path

import torch

from gan.errors import GanError


@dataclass
class TextEmbeddings:
    pooled: torch.Tensor  # (B, D) float32 sentence vector
    tokens: torch.Tensor  # (B, L, Dt) float32 word/token features
    mask: torch.Tensor  # (B, L) bool, True = real token

    def to(self, device) -> "TextEmbeddings":
        return TextEmbeddings(self.pooled.to(device), self.tokens.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.pooled.shape[0]


# Every modality's encoder returns this same triple: pooled vector, token sequence (words, audio
# frames, image patches) and its mask.
Embeddings = TextEmbeddings


class TextEncoder(abc.ABC):
    """One small interface, chosen by name in the config (see `gan.encoders.build_text_encoder`)."""

    name: str  # short identity, also used in cache file names
    pooled_dim: int  # D
    token_dim: int  # Dt
    max_length: int  # L: token features are padded/truncated to this many positions
    trainable: bool  # True only for the learned encoder, which trains jointly with the GAN

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> TextEmbeddings:
        """Encodes a batch of prompts; frozen encoders run under torch.no_grad()."""

    @abc.abstractmethod
    def export(self, folder: Path) -> dict:
        """Writes what is needed to re-create this encoder into `folder`; returns a JSON-able spec."""

    def to(self, device):
        # frozen encoders override this to move their model; the outputs follow the model
        return self


def check_prompts(texts) -> list[str]:
    """Validates a batch of prompts so a bad one is reported by its index, not as a tokenizer crash."""
    if isinstance(texts, str):
        raise GanError("text encoder: expected a list of prompts, got a single string; wrap it in a list")
    texts = list(texts)
    if not texts:
        raise GanError("text encoder: expected at least one prompt, got an empty list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise GanError(f"text encoder: prompt {i} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise GanError(f"text encoder: prompt {i} is empty or whitespace only; every prompt needs words")
    return texts


def pad_to_length(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pads (B, l, Dt) features and their (B, l) mask to (B, length, ...) so L never varies."""
    b, l, d = tokens.shape
    if l >= length:
        return tokens[:, :length], mask[:, :length]
    tokens = torch.cat([tokens, tokens.new_zeros(b, length - l, d)], dim=1)  # (B, length, Dt)
    mask = torch.cat([mask, mask.new_zeros(b, length - l)], dim=1)  # (B, length)
    return tokens, mask
