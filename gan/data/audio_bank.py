"""Every clip of a split as one int16 array, for audio-conditioned training.

Decoding 20,000 WAV files every epoch would cost more than the GAN step, so the clips are read
once (resampled to the encoder's rate, made mono, cropped or zero-padded to a fixed length) and
stored as `<root>/.cache/audio-<split>-<key>.npy`, read back whole on later runs. int16 halves the
memory of float32 and is what the WAVs hold anyway (20,000 one-second 16 kHz clips: 640 MB).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gan.atomic import atomic_path
from gan.errors import GanError


def _key(split_dir: Path, rows: list[dict], sample_rate: int, length: int) -> str:
    h = hashlib.sha256((split_dir / "metadata.jsonl").read_bytes())
    h.update(f"|{sample_rate}|{length}|".encode())
    # The rows' own files too: with --on-bad-sample skip the rows are a subset of the file's lines,
    # and a different subset of the same size must not reuse this bank.
    h.update("\n".join(r["audio_file"] for r in rows).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def audio_bank(split_dir: str | Path, rows: list[dict], sample_rate: int = 16000, seconds: float = 1.0,
               progress: bool = True) -> torch.Tensor:
    """(N, T) int16 waveforms of rows[i]["audio_file"], T = sample_rate * seconds."""
    from gan.encoders.audio import load_audio

    split_dir = Path(split_dir)
    length = int(round(sample_rate * seconds))
    missing = [i + 1 for i, r in enumerate(rows) if not isinstance(r.get("audio_file"), str)]
    if missing:
        raise GanError(f"{split_dir}/metadata.jsonl: audio conditioning needs an 'audio_file' on every row; "
                       f"missing on line(s) {missing[:10]}")
    path = split_dir.parent / ".cache" / f"audio-{split_dir.name}-{_key(split_dir, rows, sample_rate, length)}.npy"
    if path.is_file():
        bank = np.load(path, allow_pickle=False)
        if bank.shape == (len(rows), length) and bank.dtype == np.int16:
            return torch.from_numpy(bank)
    bank = np.zeros((len(rows), length), dtype=np.int16)
    for i, row in enumerate(tqdm(rows, desc=f"reading {split_dir.name} audio", disable=not progress)):
        wave, _ = load_audio(split_dir / row["audio_file"], sample_rate)  # (T,) float32 mono
        n = min(length, wave.shape[0])
        bank[i, :n] = (wave[:n].clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, bank)
    return torch.from_numpy(bank)


def to_float(waves: torch.Tensor) -> torch.Tensor:
    """int16 (B, T) -> float32 in [-1, 1]."""
    return waves.float() / 32767.0
