"""Audio condition encoders: sound files in, the same pooled vector + token sequence as text.

Two kinds, chosen by name (see `build_audio_encoder`):

* "scratch": `AudioEncoder`, a small log-mel CNN + BiGRU trained from random weights. The shapes
  sounds differ only in pitch, timbre, loudness and rhythm, which a ~0.3M-parameter model learns
  in minutes; once trained (or aligned to a text space) it is exported and reused frozen.
* "torchaudio:<BUNDLE>": a frozen pretrained wav2vec 2.0 / HuBERT / WavLM bundle from
  `torchaudio.pipelines`, for real recordings. Weights are never downloaded here: the machines are
  offline, so a missing weights file is reported at once with where to put it.

Audio is read with `soundfile` (torchaudio's own loader needs FFmpeg, which is not installed), and
every conversion (downmix, resampling, cropping) is reported rather than done silently.
"""

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from gan.encoders.base import Embeddings
from gan.errors import GanError
from gan.weights import load_model_folder

SUBFOLDER = "audio_encoder"

# Fixed log-mel normalisation, (dB - DB_CENTER) / DB_SCALE. With torchaudio's power mel spectrogram
# (n_fft 1024, Hann) a full-scale sine peaks near +48 dB and top_db=80 floors it near -32 dB, so
# [-30, 50] dB maps to about [-1, 1]. It is fixed, not per clip, because loudness is information
# (the shapes data encodes size as loudness); quieter clips simply sit lower, and digital silence
# (-100 dB) lands at -2.75.
DB_CENTER = 10.0
DB_SCALE = 40.0

# (mel, time) strides of the four conv blocks: mel is squeezed 16x, time only 4x, so a 1 s clip
# keeps 26 tokens of 40 ms, fine enough to separate the five 120 ms notes of the busiest rhythm.
CONV_STRIDES = ((2, 2), (2, 2), (2, 1), (2, 1))


# ---------------------------------------------------------------------------------------------
# Reading audio


def load_audio(path, target_rate: int = 16000, *, max_seconds: float | None = None) -> tuple[torch.Tensor, dict]:
    """Reads a WAV/FLAC/OGG file as a mono float32 (T,) waveform at `target_rate`.

    Returns the waveform and a report of what was converted, so callers can log or refuse it:
    {"file", "rate": original Hz, "resampled_to": target Hz or None, "channels": original count,
     "downmixed": bool, "cropped": bool, "seconds": length returned}.
    `max_seconds` keeps only the start of long files (read from disk only that far).
    """
    path = Path(path)
    if isinstance(target_rate, bool) or not isinstance(target_rate, (int, np.integer)) or target_rate < 1000:
        raise GanError(f"load_audio {path}: target_rate must be an integer >= 1000 Hz, got {target_rate!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise GanError(f"load_audio {path}: max_seconds must be > 0 or None, got {max_seconds!r}")
    if not path.is_file():
        raise GanError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            frames = -1 if max_seconds is None else int(math.ceil(max_seconds * rate))
            data = f.read(frames, dtype="float32", always_2d=True)  # (n, channels)
            cropped = max_seconds is not None and f.frames > data.shape[0]
    except (RuntimeError, ValueError, TypeError, OSError) as e:  # LibsndfileError is a RuntimeError
        raise GanError(
            f"cannot read audio file {path}: {e} (expected a WAV/FLAC/OGG file that libsndfile can decode)"
        ) from None
    if data.shape[0] == 0:
        raise GanError(f"audio file {path} is empty (0 samples)")
    bad = int((~np.isfinite(data)).sum())
    if bad:
        what = "only NaN/inf samples" if bad == data.size else f"{bad} NaN/inf samples out of {data.size}"
        raise GanError(f"audio file {path} contains {what}; expected finite sample values")
    wave = torch.from_numpy(data.mean(axis=1) if channels > 1 else data[:, 0])  # (n,)
    if rate != target_rate:
        wave = torchaudio.functional.resample(wave, rate, int(target_rate))  # (T,)
    report = {
        "file": str(path),
        "rate": rate,
        "resampled_to": int(target_rate) if rate != target_rate else None,
        "channels": channels,
        "downmixed": channels > 1,
        "cropped": bool(cropped),
        "seconds": wave.shape[0] / target_rate,
    }
    return wave.contiguous().float(), report


def _check_paths(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        raise GanError("audio encoder: expected a list of audio files, got a single path; wrap it in a list")
    paths = [Path(p) for p in paths]
    if not paths:
        raise GanError("audio encoder: expected at least one audio file, got an empty list")
    return paths


def fit_length(waveforms: torch.Tensor, n: int) -> torch.Tensor:
    """Crops or zero-pads (B, T) waveforms at the end to (B, n), so token counts never vary."""
    if waveforms.shape[1] >= n:
        return waveforms[:, :n]
    return F.pad(waveforms, (0, n - waveforms.shape[1]))  # (B, n)


def _check_waveforms(waveforms, who: str) -> torch.Tensor:
    if not isinstance(waveforms, torch.Tensor) or waveforms.dim() != 2 or waveforms.shape[1] == 0:
        shape = tuple(waveforms.shape) if isinstance(waveforms, torch.Tensor) else type(waveforms).__name__
        raise GanError(f"{who}: expected a (batch, samples) float waveform tensor, got {shape}")
    return waveforms.float()


# ---------------------------------------------------------------------------------------------
# The scratch encoder


class LogMel(nn.Module):
    """(B, T) waveform -> (B, n_mels, frames) log-mel spectrogram, scaled to roughly [-1, 1]."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 160, n_mels: int = 64,
                 f_min: float = 30.0, f_max: float = 8000.0, top_db: float = 80.0):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max)
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=top_db)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        spec = self.mel(waveforms).unsqueeze(1)  # (B, 1, M, F)
        # the channel axis matters: on a 3-D input AmplitudeToDB applies top_db relative to the
        # loudest clip of the whole batch, which would make a clip's features depend on its batch
        db = self.to_db(spec).squeeze(1)  # (B, M, F)
        return (db - DB_CENTER) / DB_SCALE


def _conv_block(c_in: int, c_out: int, stride: tuple[int, int]) -> nn.Sequential:
    # GroupNorm, not BatchNorm: identical in train and eval and for a batch of one file
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(math.gcd(8, c_out), c_out),
        nn.SiLU(),
    )


class AudioEncoder(ModelMixin, ConfigMixin):
    """The "scratch" audio encoder: log-mel -> 2-D conv stack -> frame tokens -> BiGRU.

    Tokens are (B, L, token_dim) with L fixed by `clip_seconds` (waveforms are cropped/zero-padded
    to it) and a mask that is all True. pooled = a projection of the token mean.

    The sequence model is a bidirectional GRU rather than 1-D convolutions because rhythm (the
    number of notes) is a property of the whole clip: after the GRU every token has seen all of it,
    at a negligible cost for ~26 steps. It mirrors the learned text encoder, too.
    """

    name = "audio"
    trainable = True  # set False when loaded as a frozen feature extractor

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,  # Hz the model expects; files are resampled to it
        clip_seconds: float = 1.0,  # every waveform is cropped/zero-padded to this length
        n_mels: int = 64,  # mel bands of the front end
        n_fft: int = 1024,  # STFT window (64 ms at 16 kHz)
        hop_length: int = 160,  # STFT hop in samples (10 ms at 16 kHz)
        f_min: float = 30.0,  # lowest mel band edge, Hz
        f_max: float | None = 8000.0,  # highest mel band edge, Hz; None = sample_rate / 2
        top_db: float = 80.0,  # dynamic range kept below each clip's loudest bin
        width: int = 32,  # channels of the first conv block; the others use 2x, 4x, 4x
        token_dim: int = 128,  # Dt: per-frame token width (both GRU directions concatenated)
        pooled_dim: int = 128,  # D: clip vector width (384 to live in MiniLM's space)
        normalize: bool = False,  # L2-normalise `pooled`; alignment code normalises itself
    ):
        super().__init__()
        f_max = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise GanError(f"audio encoder: need 0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2}, "
                           f"got f_min={f_min}, f_max={f_max}")
        if not clip_seconds > 0 or round(sample_rate * clip_seconds) < n_fft // 2 + 1:
            raise GanError(f"audio encoder: clip_seconds={clip_seconds} is too short for n_fft={n_fft}")
        if token_dim % 2 or token_dim < 2:
            raise GanError(f"audio encoder: token_dim must be even (two GRU directions), got {token_dim}")
        self.front = LogMel(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, top_db)
        widths = [width, 2 * width, 4 * width, 4 * width]
        self.convs = nn.Sequential(*[
            _conv_block(c_in, c_out, s) for c_in, c_out, s in zip([1] + widths[:-1], widths, CONV_STRIDES)])
        mels_left = n_mels
        for s, _ in CONV_STRIDES:
            mels_left = (mels_left - 1) // s + 1
        # the few mel rows left are flattened into channels rather than averaged: pitch is a
        # position on the mel axis, and averaging over it would make the tokens nearly pitch-blind
        self.to_token = nn.Linear(widths[-1] * mels_left, token_dim)
        self.gru = nn.GRU(token_dim, token_dim // 2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(token_dim)
        self.proj = nn.Linear(token_dim, pooled_dim)

    # the encoder-interface attributes, read from the config so they cannot drift from the weights
    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @property
    def pooled_dim(self) -> int:
        return self.config.pooled_dim

    @property
    def clip_samples(self) -> int:
        return int(round(self.config.sample_rate * self.config.clip_seconds))

    @property
    def max_length(self) -> int:
        """L: STFT frames (centered: samples // hop + 1), halved by each time-stride-2 block."""
        n = self.clip_samples // self.config.hop_length + 1
        for _, s in CONV_STRIDES:
            n = (n - 1) // s + 1
        return n

    def forward(self, waveforms: torch.Tensor) -> Embeddings:
        """(B, T) waveforms at `sample_rate` -> Embeddings; differentiable, used in training."""
        x = fit_length(_check_waveforms(waveforms, "audio encoder"), self.clip_samples)  # (B, T)
        x = self.front(x.to(self.device)).unsqueeze(1)  # (B, 1, M, F)
        x = self.convs(x)  # (B, C, M', L)
        B, C, M, L = x.shape
        x = self.to_token(x.permute(0, 3, 1, 2).reshape(B, L, C * M))  # (B, L, Dt)
        h, _ = self.gru(F.silu(x))  # (B, L, Dt)
        tokens = self.norm(x + h)  # (B, L, Dt)
        pooled = self.proj(tokens.mean(1))  # (B, D)
        if self.config.normalize:
            pooled = F.normalize(pooled, dim=-1)
        mask = torch.ones(B, L, dtype=torch.bool, device=tokens.device)  # (B, L)
        return Embeddings(pooled=pooled, tokens=tokens, mask=mask)

    def load_files(self, paths) -> torch.Tensor:
        """(B, clip_samples) waveforms from files, resampled and cut to this encoder's clip."""
        rate, n = self.config.sample_rate, self.clip_samples
        waves = [load_audio(p, rate, max_seconds=self.config.clip_seconds)[0] for p in _check_paths(paths)]
        return torch.stack([fit_length(w[None], n)[0] for w in waves])  # (B, T)

    @torch.no_grad()
    def encode_files(self, paths) -> Embeddings:
        """Encodes audio files in eval mode without gradients (caching, sampling, evaluation)."""
        was_training = self.training
        self.eval()
        try:
            return self(self.load_files(paths))
        finally:
            self.train(was_training)

    def export(self, folder: Path) -> dict:
        self.save_pretrained(Path(folder) / SUBFOLDER)
        return {"type": "audio", "path": SUBFOLDER, "trainable": bool(self.trainable)}

    @classmethod
    def load(cls, folder: Path, subfolder: str = SUBFOLDER) -> "AudioEncoder":
        path = Path(folder) / subfolder
        if not (path / "config.json").is_file():
            raise GanError(f"audio encoder: {path} has no config.json; expected a folder written by export()")
        try:
            return load_model_folder(cls, path, "audio encoder").eval()
        except (OSError, ValueError) as e:
            raise GanError(f"audio encoder: could not load {path}: {e}") from e


# ---------------------------------------------------------------------------------------------
# Choosing by name


def build_audio_encoder(name: str = "scratch", **kw):
    """"scratch" (trainable AudioEncoder), "torchaudio:<BUNDLE>" (frozen), or an exported folder (frozen)."""
    from gan.encoders.audio_pretrained import TorchaudioPipelineEncoder

    options = ("'scratch', 'torchaudio:<BUNDLE>' (e.g. torchaudio:WAV2VEC2_BASE) "
               "or a folder with an exported audio encoder")
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise GanError(f"audio encoder: expected {options}, got {name!r}")
    name = str(name)
    if name == "scratch" or name.startswith("torchaudio:"):
        try:
            return AudioEncoder(**kw) if name == "scratch" else TorchaudioPipelineEncoder(name, **kw)
        except TypeError as e:  # an unknown keyword from the config
            raise GanError(f"audio encoder {name!r}: {e}") from e
    path = Path(name).expanduser()
    for folder in (path, path / SUBFOLDER):
        if (folder / "config.json").is_file():
            model = AudioEncoder.load(folder, "")
            model.trainable = False
            return model.requires_grad_(False)
    raise GanError(
        f"audio encoder {name!r}: unknown name and no exported encoder (config.json) there; expected {options}")


def load_audio_encoder(spec: dict, folder: Path):
    """Re-creates the encoder that wrote `spec` (and its files) with export(folder)."""
    from gan.encoders.audio_pretrained import TorchaudioPipelineEncoder

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "audio":
        model = AudioEncoder.load(Path(folder), spec.get("path", SUBFOLDER))
        if not spec.get("trainable", True):
            model.trainable = False
            model.requires_grad_(False)
        return model
    if kind == "torchaudio":
        if "bundle" not in spec:
            raise GanError(f"audio encoder spec {spec}: type 'torchaudio' needs a 'bundle' field, e.g. WAV2VEC2_BASE")
        return TorchaudioPipelineEncoder(spec["bundle"], clip_seconds=spec.get("clip_seconds", 1.0))
    raise GanError(f"audio encoder spec {spec!r}: unknown 'type'; expected 'audio' or 'torchaudio'")
