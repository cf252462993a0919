"""Frozen pretrained torchaudio audio models (wav2vec 2.0 / HuBERT / WavLM bundles) as condition encoders.

Weights are never downloaded here: these machines are offline, so a missing weights file is
reported at once with its URL and where torch hub expects it.
"""

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from gan.encoders.audio import _check_paths, _check_waveforms, fit_length, load_audio
from gan.encoders.base import Embeddings
from gan.errors import GanError


TORCHAUDIO_URL = "https://download.pytorch.org/torchaudio/models/"  # how torchaudio completes _path


def _wav2vec2_bundles() -> list[str]:
    from torchaudio import pipelines

    return [n for n in pipelines.__all__ if isinstance(getattr(pipelines, n), pipelines.Wav2Vec2Bundle)]


def weights_file(bundle) -> tuple[str, Path]:
    """(url, local file) of a bundle's weights, where torch.hub.load_state_dict_from_url caches it."""
    url = bundle._path if bundle._path.startswith("https") else TORCHAUDIO_URL + bundle._path
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


class TorchaudioPipelineEncoder:
    """A frozen wav2vec 2.0 / HuBERT / WavLM bundle: tokens = last-layer frames, pooled = their mean."""

    trainable = False

    def __init__(self, bundle: str, clip_seconds: float = 1.0, device: str | torch.device = "cpu"):
        from torchaudio import pipelines

        self.bundle_name = str(bundle).removeprefix("torchaudio:")
        if self.bundle_name not in _wav2vec2_bundles():
            raise GanError(f"audio encoder 'torchaudio:{self.bundle_name}': not a torchaudio wav2vec2-family "
                           f"bundle; expected one of {_wav2vec2_bundles()}")
        if not clip_seconds > 0:
            raise GanError(f"audio encoder: clip_seconds must be > 0, got {clip_seconds!r}")
        b = getattr(pipelines, self.bundle_name)
        url, file = weights_file(b)
        if not file.is_file():  # checked here: torchaudio would try the network, which may hang offline
            raise GanError(
                f"audio encoder 'torchaudio:{self.bundle_name}': weights file {file} is missing. "
                f"On a machine with internet download {url} and copy it to {file} "
                f"(torch hub checkpoints folder; set TORCH_HOME to move it).")
        try:
            model = b.get_model(dl_kwargs={"model_dir": str(file.parent), "weights_only": True, "progress": False})
        except Exception as e:  # a truncated or foreign file: say which one
            raise GanError(f"audio encoder 'torchaudio:{self.bundle_name}': could not load {file}: {e}") from e
        # torchaudio's input layer norm spans the whole batch; do it per clip ourselves instead
        self.normalize_waveform = bool(b._normalize_waveform)
        self.model = getattr(model, "model", model).eval().requires_grad_(False)
        self.name = f"torchaudio-{self.bundle_name}"
        self.sample_rate = int(b.sample_rate)
        self.clip_seconds = float(clip_seconds)
        self.token_dim = self.pooled_dim = int(b._params["encoder_embed_dim"])
        self._conv_layers = b._params["extractor_conv_layer_config"]
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def max_length(self) -> int:
        n = self.clip_samples
        for _, kernel, stride in self._conv_layers:
            n = (n - kernel) // stride + 1
        return n

    def to(self, device):
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> Embeddings:
        """(B, T) waveforms at `sample_rate` (+ optional (B,) true lengths) -> Embeddings."""
        x = fit_length(_check_waveforms(waveforms, self.name), self.clip_samples).to(self.device)  # (B, T)
        if lengths is not None:
            lengths = lengths.clamp(1, self.clip_samples).to(self.device)
        if self.normalize_waveform:
            x = F.layer_norm(x, x.shape[1:])  # per clip
        feats, out_len = self.model.extract_features(x, lengths)
        tokens = feats[-1].float()  # (B, L, Dt)
        B, L, _ = tokens.shape
        mask = torch.ones(B, L, dtype=torch.bool, device=tokens.device)  # (B, L)
        if out_len is not None:
            mask = torch.arange(L, device=tokens.device)[None] < out_len[:, None]
        tokens = tokens * mask.unsqueeze(-1)
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D) masked mean
        return Embeddings(pooled=pooled, tokens=tokens, mask=mask)

    __call__ = forward

    def encode_files(self, paths) -> Embeddings:
        waves = [load_audio(p, self.sample_rate, max_seconds=self.clip_seconds)[0] for p in _check_paths(paths)]
        lengths = torch.tensor([w.shape[0] for w in waves])  # (B,)
        x = torch.stack([fit_length(w[None], self.clip_samples)[0] for w in waves])  # (B, T)
        return self(x, lengths)

    def export(self, folder: Path) -> dict:
        # nothing to write: the weights live in the torch hub cache under a fixed name
        return {"type": "torchaudio", "bundle": self.bundle_name, "clip_seconds": self.clip_seconds}
