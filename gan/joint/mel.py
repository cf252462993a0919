"""Log-mel spectrograms as the generator's audio output, and back to waveforms.

The joint generator draws sound as a (1, n_mels, frames) "image" in [-1, 1] next to the picture,
because a 64x64 map is what its conv stack already knows how to make, and a waveform is recovered
afterwards with a non-negative inverse of the mel filterbank and Griffin-Lim (no vocoder to download).

The dB scale is FIXED ([db_floor, db_ceil] -> [-1, 1]), not per clip: size is encoded as loudness,
so a per-clip normalisation would erase one of the four attributes. The settings travel in the
joint generator's config.json (to_dict / from_dict) so sampling needs nothing else.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio

from gan.errors import GanError


@dataclass(frozen=True)
class MelSettings:
    sample_rate: int = 16000  # Hz of the waveforms going in and coming out
    seconds: float = 1.0  # clip length; T = round(sample_rate * seconds) samples
    n_fft: int = 1024  # STFT size (64 ms): 15.6 Hz bins, fine enough to split pitches a minor third apart
    hop_length: int = 250  # samples between frames (15.6 ms): a 1 s clip gives 65 frames, the last is cropped
    n_mels: int = 64  # mel bands = height of the spectrogram image
    f_min: float = 0.0  # lowest mel band edge, Hz
    f_max: float = 4000.0  # highest mel band edge, Hz: the shapes' sounds have little energy above it
    frames: int = 64  # time steps kept = width of the spectrogram image
    db_floor: float = -40.0  # power in dB mapped to -1 (and everything quieter, digital silence included)
    db_ceil: float = 50.0  # power in dB mapped to +1 (louder is clamped)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "mel settings") -> MelSettings:
        """Inverse of to_dict; unknown or missing keys are GanErrors, so a stale config is never half-read."""
        if not isinstance(d, dict):
            raise GanError(f"{where}: expected a table of mel settings, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise GanError(f"{where}: unknown key {key!r}; expected exactly the keys {names}")
        for key in names:
            if key not in d:
                raise GanError(f"{where}: missing key {key!r}; expected exactly the keys {names}")
        s = cls(**d)
        s.check(where)
        return s

    @property
    def length(self) -> int:
        """T, waveform samples per clip."""
        return int(round(self.sample_rate * self.seconds))

    @property
    def full_frames(self) -> int:
        """Frames a centred STFT of T samples has before cropping to `frames`."""
        return self.length // self.hop_length + 1

    def check(self, where: str = "mel settings") -> None:
        def bad(field, expected):
            raise GanError(f"{where}: '{field}' is {getattr(self, field)!r}; expected {expected}")

        for field in ("sample_rate", "n_fft", "hop_length", "n_mels", "frames"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(field, "a positive integer")
        for field in ("seconds", "f_min", "f_max", "db_floor", "db_ceil"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                bad(field, "a number")
        if not self.seconds > 0:
            bad("seconds", "> 0")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            bad("f_max", f"f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2}")
        if not self.db_floor < self.db_ceil:
            bad("db_ceil", f"> db_floor = {self.db_floor}")


# Transforms hold filterbanks and windows; built once per (settings, device), not per call.
_CACHE: dict[tuple, tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]] = {}


def _transforms(s: MelSettings, device: torch.device):
    """(MelSpectrogram, InverseMelScale, Hann window) for these settings, on `device`."""
    key = (s, str(device))
    if key not in _CACHE:
        s.check()
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, f_min=s.f_min, f_max=s.f_max,
            n_mels=s.n_mels, power=2.0, center=True, mel_scale="htk")
        inv = torchaudio.transforms.InverseMelScale(
            n_stft=s.n_fft // 2 + 1, n_mels=s.n_mels, sample_rate=s.sample_rate, f_min=s.f_min, f_max=s.f_max,
            mel_scale="htk")
        _CACHE[key] = (mel.to(device).eval(), inv.to(device).eval(), torch.hann_window(s.n_fft, device=device))
    return _CACHE[key]


def waveform_to_mel(wave: torch.Tensor, s: MelSettings) -> torch.Tensor:
    """(B, T) float waveforms in [-1, 1] -> (B, 1, n_mels, frames) log-mel on the fixed dB scale, in [-1, 1]."""
    if wave.ndim != 2 or wave.shape[1] < 1:
        raise GanError(f"waveform_to_mel: expected waveforms of shape (B, T), got {tuple(wave.shape)}")
    mel_t, _, _ = _transforms(s, wave.device)
    with torch.no_grad():
        power = mel_t(wave.float())  # (B, M, F0), F0 = T // hop + 1
    db = 10.0 * torch.log10(power.clamp(min=1e-10))
    x = ((db - s.db_floor) / (s.db_ceil - s.db_floor) * 2.0 - 1.0).clamp(-1.0, 1.0)
    if x.shape[-1] >= s.frames:
        x = x[..., : s.frames]  # (B, M, F)
    else:  # a short clip: the missing frames are silence
        x = F.pad(x, (0, s.frames - x.shape[-1]), value=-1.0)
    return x.unsqueeze(1)  # (B, 1, M, F)


INVERSES = ("kl", "euclidean", "lstsq")  # mel power -> linear power solvers (see _inverse_mel)
INVERSE, NNLS_ITER = "kl", 100  # what sampling and evaluation use, recorded with every audio metric


def _inverse_mel(power: torch.Tensor, inv_t: torch.nn.Module, nnls_iter: int, inverse: str) -> torch.Tensor:
    """(B, M, F0) mel power -> (B, n_fft // 2 + 1, F0) linear power, non-negative.

    Three solvers of fb @ spec = power for spec >= 0 (fb: the (M, K) mel filterbank):
    - "lstsq": torchaudio 2.11's InverseMelScale, a minimum-norm least-squares solve then relu. The
      relu throws away the negative half of an oscillating solution: on shapes sounds the result
      re-analyses ~9 dB off the mel it came from (mel -> wave -> mel error 0.225 normalised units).
    - "euclidean": non-negative least squares by Lee & Seung's multiplicative updates, started from
      the back-projection. Squared error in linear power is ruled by the loudest bins, so quiet
      partials stay smeared across their band: round trip 0.055 on real sounds after 100 iterations,
      and on generated spectrograms the smear re-analyses louder (small shapes heard as large).
    - "kl" (default): the same filterbank fitted in generalised KL divergence (Richardson-Lucy
      updates), which weighs each band's RELATIVE error, as a dB scale does; it concentrates each
      band's energy on few bins, as harmonic sounds have it: round trip 0.036 on real sounds, and
      size read from generated sounds 0.875 -> 0.955 (BENCHMARKS.md, session 12). Converged by ~50
      iterations.
    Both iterative solvers keep bins above f_max (in no filter) silent and stay non-negative by
    construction.
    """
    if inverse not in INVERSES:
        raise GanError(f"inverse mel: unknown solver {inverse!r}; expected one of {list(INVERSES)}")
    if inverse == "lstsq" or nnls_iter <= 0:
        return inv_t(power)
    a = inv_t.fb.T  # (M, K) mel filterbank
    active = a.sum(0) > 0  # bins above f_max belong to no filter: they stay silent
    a_act = a[:, active]  # (M, K')
    back = a_act.T @ power  # (B, K', F0): the back-projection, a positive starting point
    spec = back.clone()
    if inverse == "euclidean":
        for _ in range(nnls_iter):
            spec = spec * back / (a_act.T @ (a_act @ spec) + 1e-20)
    else:
        weight = a_act.sum(0)[None, :, None]  # (1, K', 1): how much of each bin the filters see
        for _ in range(nnls_iter):
            spec = spec * (a_act.T @ (power / (a_act @ spec + 1e-20))) / weight
    out = power.new_zeros(power.shape[0], a.shape[1], power.shape[-1])  # (B, K, F0)
    out[:, active] = spec
    return out


@contextmanager
def _seeded(device: torch.device, seed: int):
    """The random stream of `device` set to `seed` for the block and restored afterwards.

    Only that device's generator is touched: torch.manual_seed would also queue a seed for every
    CUDA device, which would outlive the block on a machine where CUDA is not initialised yet.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index], device_type="cuda"), torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield


CHUNK = 64  # spectrograms inverted at a time, so memory does not grow with how many sounds are asked for


def mel_to_waveform(mel: torch.Tensor, s: MelSettings, n_iter: int = 32, seed: int = 0,
                    nnls_iter: int = NNLS_ITER, inverse: str = INVERSE, progress: bool = False,
                    desc: str = "sounds") -> torch.Tensor:
    """(B, 1, n_mels, frames) normalised log-mel -> (B, T) float32 waveforms in [-1, 1].

    Deterministic: Griffin-Lim's random initial phase is drawn under `seed` with the caller's
    random stream saved and restored, the same for every chunk of CHUNK spectrograms, so a mel's
    sound depends only on the mel and its position modulo CHUNK, and memory stays bounded.
    n_iter: Griffin-Lim iterations; inverse, nnls_iter: the inverse-mel solver and its iterations
    (see _inverse_mel). progress: a bar over the chunks (the sounds are the same without it).
    """
    if mel.ndim != 4 or tuple(mel.shape[1:]) != (1, s.n_mels, s.frames):
        raise GanError(f"mel_to_waveform: expected mels of shape (B, 1, {s.n_mels}, {s.frames}), "
                       f"got {tuple(mel.shape)}")
    if mel.shape[0] > CHUNK:
        from tqdm.auto import tqdm

        chunks = tqdm(range(0, mel.shape[0], CHUNK), desc=desc, disable=not progress)
        return torch.cat([mel_to_waveform(mel[lo:lo + CHUNK], s, n_iter, seed, nnls_iter, inverse) for lo in chunks])
    device = mel.device
    if device.type not in ("cpu", "cuda"):  # only these two generators are seeded in _seeded
        return mel_to_waveform(mel.cpu(), s, n_iter, seed, nnls_iter, inverse).to(device)
    _, inv_t, window = _transforms(s, device)
    x = mel[:, 0].float().clamp(-1.0, 1.0)  # (B, M, F)
    db = (x + 1.0) / 2.0 * (s.db_ceil - s.db_floor) + s.db_floor
    power = torch.pow(10.0, db / 10.0)  # (B, M, F)
    # back to the centred STFT's frame count, so Griffin-Lim's re-analysis of T samples lines up
    full = s.full_frames
    if power.shape[-1] < full:  # the cropped tail frame(s): repeat the last one kept
        power = torch.cat([power, power[..., -1:].expand(-1, -1, full - power.shape[-1])], dim=-1)
    power = power[..., :full]  # (B, M, F0)
    with torch.no_grad():
        spec = _inverse_mel(power, inv_t, nnls_iter, inverse)  # (B, K, F0) linear power
        with _seeded(device, seed):
            wave = torchaudio.functional.griffinlim(
                spec, window, s.n_fft, s.hop_length, s.n_fft, 2.0, n_iter, 0.99, s.length, True)  # (B, T)
    return wave.float().clamp(-1.0, 1.0)
