"""The condition path: captions, sounds and pictures in, the one (pooled, tokens, mask) G and D consume.

A `Conditioner` holds one encoder per modality and, for several modalities, the fusion module
(gan.models.fusion). It is an nn.Module whose registered children are exactly what trains with
the GAN (a learned text encoder, scratch audio/image encoders, the fusion), so the trainer can
hand it to `accelerator.prepare` and D's optimizer; frozen encoders (MiniLM, aligned encoders)
sit beside it unregistered, and their embeddings are precomputed once per dataset.

`forward(inputs)` takes per modality either raw model input (token ids, waveforms, images — for
trainable encoders, in training) or ready `Embeddings` (frozen encoders' cached output, or any
encoder's output at sampling time), or None for a missing modality (fusion's learned null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from gan.encoders.base import Embeddings
from gan.errors import GanError
from gan.weights import load_model_folder

MODALITIES = ("text", "audio", "image")
ZERO_SHOT_ROUTES = ("direct", "projected", "caption")
FUSION_FOLDER = "fusion"


def is_trainable(encoder) -> bool:
    return bool(getattr(encoder, "trainable", False)) and isinstance(encoder, nn.Module)


class Conditioner(nn.Module):
    def __init__(self, modalities: list[str], encoders: dict, fusion=None, use_tokens: bool = True):
        super().__init__()
        if len(modalities) > 1 and fusion is None:
            raise GanError(f"conditioning on {modalities} needs a fusion module (condition.fusion)")
        missing = [m for m in modalities if m not in encoders]
        if missing:
            raise GanError(f"no encoder for modality {missing}")
        self.modalities = list(modalities)
        self.use_tokens = use_tokens
        self.encoders = nn.ModuleDict({m: e for m, e in encoders.items() if is_trainable(e)})
        self.frozen = {m: e for m, e in encoders.items() if not is_trainable(e)}  # not registered: never trained
        self.fusion = fusion
        # zero-shot: encoders aligned to this generator's text space, driving it in place of text
        self.aligned: dict = {}

    # -- shapes ---------------------------------------------------------------------------
    def encoder(self, modality: str):
        return self.encoders[modality] if modality in self.encoders else self.frozen[modality]

    @property
    def cond_dim(self) -> int:
        return self.fusion.config.out_dim if self.fusion is not None else self.encoder(self.modalities[0]).pooled_dim

    @property
    def token_dim(self) -> int | None:
        if not self.use_tokens:
            return None
        if self.fusion is not None:
            return self.fusion.config.token_out_dim
        return self.encoder(self.modalities[0]).token_dim

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    # -- the condition ----------------------------------------------------------------------
    def forward(self, inputs: dict, weights: dict[str, float] | None = None) -> Embeddings:
        unknown = [m for m in inputs if m not in self.modalities]
        if unknown:
            raise GanError(f"this generator is conditioned on {self.modalities}; got input for {unknown}")
        embs = {}
        for m in self.modalities:
            x = inputs.get(m)
            embs[m] = x if x is None or isinstance(x, Embeddings) else self.encoders[m](x)
        if self.fusion is not None:
            out = self.fusion(embs, weights=weights)
        else:
            if weights:
                raise GanError("--weights needs a generator trained with fusion = 'weighted'")
            out = embs[self.modalities[0]]
            if out is None:
                raise GanError(f"this generator needs a {self.modalities[0]} condition")
        if not self.use_tokens:
            return Embeddings(pooled=out.pooled, tokens=None, mask=None)
        return out

    @torch.no_grad()
    def encode(self, texts: list[str] | None = None, audio: list | None = None, images: list | None = None,
               weights: dict[str, float] | None = None) -> Embeddings:
        """Sampling: user inputs (prompts, audio files, image files) -> the condition, no gradients.

        Lists are paired element-wise (condition i = texts[i] + audio[i] + images[i]); a list of
        length 1 is repeated to match the others. A modality not given is missing (its null).
        """
        given = {m: v for m, v in (("text", texts), ("audio", audio), ("image", images)) if v}
        if not given:
            raise GanError("no condition given: pass --prompt, --audio and/or --image")
        n = max(len(v) for v in given.values())
        bad = {m: len(v) for m, v in given.items() if len(v) not in (1, n)}
        if bad:
            raise GanError(f"conditions are paired one to one: got {bad} items against {n}")
        given = {m: list(v) * (n if len(v) == 1 else 1) for m, v in given.items()}
        zero_shot = [m for m in given if m not in self.modalities]
        if zero_shot:
            return self._zero_shot(given, zero_shot)
        was_training = self.training
        self.eval()
        try:
            return self({m: self._encode_one(m, self.encoder(m), v) for m, v in given.items()}, weights)
        finally:
            self.train(was_training)

    @staticmethod
    def _encode_one(modality: str, encoder, items: list) -> Embeddings:
        if modality == "text":
            return encoder.encode(items)
        if modality == "audio":
            return encoder.encode_files(items)
        return encoder.encode_images(items)

    def _zero_shot(self, given: dict, modalities: list[str]) -> Embeddings:
        """A text-conditioned generator driven by an encoder aligned to its text space (`gan align`).

        The aligned pooled vector replaces the sentence vector. For word cross-attention it becomes
        a single pseudo-token: attention over one token returns its value, which for a mean-pooled
        sentence encoder is what uniform attention over the words would return, scaled to the
        text encoder's typical token-mean length.
        """
        if self.modalities != ["text"] or len(given) != 1:
            raise GanError(f"this generator is conditioned on {self.modalities}; a {modalities[0]} condition needs "
                           f"either a generator trained on it or a text generator with an aligned encoder "
                           f"(--{modalities[0]}-encoder FOLDER from gan align)")
        m = modalities[0]
        if m not in self.aligned:
            raise GanError(f"a text-conditioned generator can take --{m} only through an encoder aligned to its text "
                           f"space: pass --{m}-encoder runs/align_{m}/encoder (written by gan align)")
        encoder, scale, bank = self.aligned[m]
        pooled = torch.nn.functional.normalize(self._encode_one(m, encoder, given[m]).pooled.float(), dim=-1)
        if isinstance(bank, CaptionSubspace):
            pooled = bank.project(pooled)
        elif bank is not None:  # retrieval route: the nearest training caption, encoded as text
            texts, vectors = bank
            nearest = (pooled @ vectors.T).argmax(1).tolist()
            return self({"text": self.encoder("text").encode([texts[i] for i in nearest])})
        if not self.use_tokens:
            return Embeddings(pooled=pooled, tokens=None, mask=None)
        tokens = pooled[:, None, :] * scale  # (B, 1, D)
        return Embeddings(pooled=pooled, tokens=tokens, mask=torch.ones(tokens.shape[:2], dtype=torch.bool))

    def add_aligned(self, modality: str, folder: str | Path, route: str = "direct") -> None:
        """Drive this text generator with `modality` through an encoder from `gan align`.

        route "direct": the aligned vector itself is the condition (Sound2Scene / wav2clip).
        route "projected": the aligned vector, kept to where captions lie: its offset from the mean
        training caption is projected onto the captions' principal directions (those holding 99 %
        of their variance) and given a caption's typical length. InfoNCE only ranks, so aligned
        vectors sit at cosine ~0.5 from every caption, off the manifold G was trained on; this
        keeps what varies between captions and drops the rest. Still one continuous vector per
        input, not a caption.
        route "caption": the aligned vector picks the nearest training caption (the caption bank
        `gan align` saved next to the encoder), and that caption, encoded as text, is the
        condition: audio -> caption retrieval -> text-to-image.
        """
        if route not in ZERO_SHOT_ROUTES:
            raise GanError(f"zero-shot route: expected one of {', '.join(ZERO_SHOT_ROUTES)}, got {route!r}")
        text = self.encoder("text")
        if modality == "audio":
            from gan.encoders.audio import AudioEncoder as cls
        else:
            from gan.encoders.image import ImageEncoder as cls
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise GanError(f"--{modality}-encoder {folder}: expected an encoder folder written by gan align "
                           f"(config.json + weights), e.g. runs/align_{modality}/encoder")
        encoder = cls.from_pretrained(path).eval()
        if encoder.pooled_dim != text.pooled_dim:
            raise GanError(f"--{modality}-encoder {folder}: its {encoder.pooled_dim}-d output is not this generator's "
                           f"{text.pooled_dim}-d text space; align it to the same text encoder")
        probe = text.encode(["a large red circle in the top left", "a small blue square in the center",
                             "a green triangle", "a white disc in the bottom right corner"])
        mean = (probe.tokens * probe.mask[..., None]).sum(1) / probe.mask.sum(1, keepdim=True)
        bank = None
        if route != "direct":
            from safetensors.torch import load_file

            try:
                texts = json.loads((path.parent / "captions.json").read_text())
                vectors = load_file(str(path.parent / "captions.safetensors"))["pooled"]
            except (OSError, KeyError, json.JSONDecodeError) as e:
                raise GanError(f"--{modality}-encoder {folder}: no caption bank next to it ({e}); "
                               f"re-run gan align, which writes captions.json and captions.safetensors") from None
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
            bank = (texts, vectors) if route == "caption" else caption_subspace(vectors)
        self.aligned[modality] = (encoder, mean.norm(dim=-1).mean().item(), bank)

    # -- export -----------------------------------------------------------------------------
    def export(self, folder: Path) -> dict:
        """Every encoder and the fusion module into `folder`; returns the spec for condition.json."""
        spec = {"modalities": self.modalities, "use_tokens": self.use_tokens, "encoders": {}}
        for m in self.modalities:
            enc = self.encoder(m)
            if m == "text":
                spec["text_encoder"] = enc.export(folder)  # older exports: a top-level "text_encoder"
            else:
                out = enc.export(folder)
                out["trainable"] = False  # exported encoders are used frozen
                spec["encoders"][m] = out
        if self.fusion is not None:
            self.fusion.save_pretrained(Path(folder) / FUSION_FOLDER)
            spec["fusion"] = FUSION_FOLDER
        return spec

    @classmethod
    def from_export(cls, folder: Path, spec: dict) -> "Conditioner":
        from gan.encoders import load_text_encoder

        modalities = spec.get("modalities", ["text"])
        encoders = {}
        try:
            for m in modalities:
                if m == "text":
                    encoders[m] = load_text_encoder(spec["text_encoder"], folder)
                elif m == "audio":
                    from gan.encoders.audio import load_audio_encoder

                    encoders[m] = load_audio_encoder(spec["encoders"][m], folder)
                elif m == "image":
                    from gan.encoders.image import ImageEncoder

                    encoders[m] = _frozen(ImageEncoder.load(folder, spec["encoders"][m].get("path", "image_encoder")))
                else:
                    raise GanError(f"{folder}: unknown modality {m!r} in condition.json")
            fusion = None
            if spec.get("fusion"):
                from gan.models.fusion import ConditionFusion

                fusion = load_model_folder(ConditionFusion, Path(folder) / spec["fusion"], "fusion module").eval()
        except (KeyError, TypeError) as e:
            raise GanError(f"{folder}/condition.json: malformed condition spec ({e!r}); re-export the generator") from None
        return cls(modalities, encoders, fusion, bool(spec.get("use_tokens", True))).eval()


class CaptionSubspace(NamedTuple):
    mean: torch.Tensor  # (D,) mean training caption vector
    basis: torch.Tensor  # (K, D) orthonormal principal directions of the captions' offsets
    radius: float  # typical length of a caption's offset from the mean

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) unit vectors -> (B, D) unit vectors on the captions' subspace."""
        offset = (pooled - self.mean) @ self.basis.T @ self.basis  # (B, D)
        offset = torch.nn.functional.normalize(offset, dim=-1) * self.radius
        return torch.nn.functional.normalize(self.mean + offset, dim=-1)


def caption_subspace(vectors: torch.Tensor, variance: float = 0.99) -> CaptionSubspace:
    """Mean, principal directions holding `variance` of the spread, and typical offset length of
    (N, D) unit caption vectors."""
    mean = vectors.mean(0)
    offsets = vectors - mean
    _, s, vh = torch.linalg.svd(offsets, full_matrices=False)
    share = (s**2).cumsum(0) / (s**2).sum()
    k = int((share < variance).sum().item()) + 1
    return CaptionSubspace(mean, vh[:k], offsets.norm(dim=-1).median().item())


def _frozen(model):
    model.trainable = False
    return model.requires_grad_(False).eval()


def build_conditioner(cfg, texts: list[str]) -> Conditioner:
    """The conditioner a training config asks for (encoders untrained or loaded, fusion fresh)."""
    from gan.encoders import build_text_encoder

    c = cfg.condition
    encoders = {}
    for m in c.modalities:
        if m == "text":
            extra = {"texts": texts} if cfg.text.encoder == "learned" else {}
            encoders[m] = build_text_encoder(cfg.text.encoder, **extra)
        elif m == "audio":
            from gan.encoders.audio import build_audio_encoder

            kw = {"width": c.encoder_width, "token_dim": c.encoder_dim, "pooled_dim": c.encoder_dim}
            encoders[m] = build_audio_encoder(c.audio_encoder, **(kw if c.audio_encoder == "scratch" else {}))
        else:
            from gan.encoders.image import ImageEncoder

            w = c.encoder_width
            if c.image_encoder == "scratch":
                encoders[m] = ImageEncoder(resolution=cfg.data.resolution, pooled_dim=c.encoder_dim,
                                           token_dim=c.encoder_dim, channels=(w, 2 * w, 4 * w, 8 * w))
            else:
                path = Path(c.image_encoder)
                if not (path / "config.json").is_file():
                    raise GanError(f"condition.image_encoder = {c.image_encoder!r}: expected 'scratch' or a folder "
                                   f"with an exported image encoder (config.json), e.g. runs/align_image/encoder "
                                   f"written by: gan align --data {cfg.data.root}/train --modality image")
                encoders[m] = _frozen(ImageEncoder.from_pretrained(path))
                if encoders[m].config.resolution != cfg.data.resolution:
                    raise GanError(f"condition.image_encoder {path}: trained at {encoders[m].config.resolution} px, "
                                   f"data.resolution is {cfg.data.resolution}")
    fusion = None
    mode = c.fusion if c.fusion != "auto" else ("none" if len(c.modalities) == 1 else "concat")
    if mode != "none":
        from gan.models.fusion import ConditionFusion

        fusion = ConditionFusion(
            modalities=tuple(c.modalities), pooled_dims=tuple(encoders[m].pooled_dim for m in c.modalities),
            token_dims=tuple(encoders[m].token_dim for m in c.modalities), mode=mode, out_dim=c.fusion_dim,
            token_out_dim=c.fusion_token_dim, weights=tuple(c.weights) if c.weights else None,
            modality_dropout=c.modality_dropout)
    return Conditioner(list(c.modalities), encoders, fusion, cfg.text.use_tokens)


def read_condition_spec(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "condition.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GanError(f"{folder}/condition.json: unreadable ({e}); re-export the generator") from None
