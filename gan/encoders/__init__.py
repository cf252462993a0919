"""Condition encoders, chosen by name in the config and re-created from an exported spec.

`build_text_encoder` is what training calls; `load_text_encoder` is its inverse for `gan sample`,
which gets only the run folder: the spec written by `encoder.export(folder)` plus whatever files it
put there, and neither the dataset nor the training config.
"""

from pathlib import Path

from gan.encoders.base import TextEmbeddings, TextEncoder
from gan.errors import GanError

__all__ = ["TextEmbeddings", "TextEncoder", "build_text_encoder", "load_text_encoder"]


def build_text_encoder(name: str = "minilm", **kw) -> TextEncoder:
    """"minilm" (default), "learned" (needs texts=training captions), or a HF model id / local folder."""
    if not isinstance(name, str) or not name.strip():
        raise GanError(f"text encoder: expected a name ('minilm', 'learned', a HuggingFace id or folder), got {name!r}")
    if name == "minilm":
        from gan.encoders.text import MiniLMEncoder

        return MiniLMEncoder(**kw)
    if name == "learned":
        from gan.encoders.learned import LearnedTextEncoder

        texts = kw.pop("texts", None)
        if texts is None:
            raise GanError("text encoder 'learned': pass texts=<the training captions> to build its vocabulary")
        return LearnedTextEncoder.from_texts(texts, **kw)
    from gan.encoders.text import HFTextEncoder

    return HFTextEncoder(name, **kw)


def load_text_encoder(spec: dict, folder: Path) -> TextEncoder:
    """Re-creates the encoder that wrote `spec` (and its files) with export(folder)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "minilm":
        from gan.encoders.text import MiniLMEncoder

        return MiniLMEncoder(max_length=spec.get("max_length", 32))
    if kind == "hf":
        from gan.encoders.text import HFTextEncoder

        if "model" not in spec:
            raise GanError(f"text encoder spec {spec}: type 'hf' needs a 'model' field (HuggingFace id or folder)")
        return HFTextEncoder(spec["model"], max_length=spec.get("max_length", 32))
    if kind == "learned":
        from gan.encoders.learned import LearnedTextEncoder

        return LearnedTextEncoder.load(Path(folder), spec.get("path", "text_encoder"))
    raise GanError(f"text encoder spec {spec!r}: unknown 'type'; expected 'minilm', 'hf' or 'learned'")
