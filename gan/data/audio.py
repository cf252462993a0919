"""Audio for the shapes dataset: turn four attributes into a short sound, and read/write WAVs.

The sound of a sample encodes the same four attributes as its picture, so an audio-conditioned
generator has something real to learn from:

    color    -> pitch     8 fundamentals a minor third apart (220 Hz .. 740 Hz)
    shape    -> timbre    circle = pure sine, square = odd harmonics (square-ish),
                          triangle = all harmonics at 1/n (sawtooth-ish)
    size     -> loudness  small = RMS 0.07, large = RMS 0.20 while the note sounds (~10 dB apart)
    position -> rhythm    number of notes in the second: top left 1, top right 2,
                          bottom left 3, bottom right 4, center 5

Each sample gets a little jitter (pitch +-1%, loudness +-5%, note length, harmonic phases) so no
two clips are identical. The jitter is far smaller than the gaps between classes.
"""

from pathlib import Path

import numpy as np
import soundfile as sf

from gan.errors import GanError

# A minor third (3 semitones) between colors: a 19% gap, easy to hear and to pick out of an FFT.
PITCHES: dict[str, float] = {
    name: 220.0 * 2.0 ** (3 * k / 12)
    for k, name in enumerate(
        ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"])
}
# (harmonic number, relative amplitude); the fundamental is always the strongest partial.
TIMBRES: dict[str, list[tuple[int, float]]] = {
    "circle": [(1, 1.0)],
    "square": [(n, 1.0 / n) for n in (1, 3, 5, 7, 9)],
    "triangle": [(n, 1.0 / n) for n in range(1, 9)],
}
LOUDNESS: dict[str, float] = {"small": 0.07, "large": 0.20}  # RMS while the note sounds
PULSES: dict[str, int] = {
    "top left": 1, "top right": 2, "bottom left": 3, "bottom right": 4, "center": 5}

RAMP_SECONDS = 0.01  # attack/release, long enough to avoid clicks at note edges


def _lookup(table: dict, attrs: dict, key: str):
    value = attrs.get(key) if isinstance(attrs, dict) else None
    if value not in table:
        raise GanError(f"sonify: attribute {key!r} is {value!r}; expected one of {list(table)}")
    return table[value]


def _envelope(n: int, pulses: int, duty: float, ramp: int) -> np.ndarray:
    """`pulses` equally spaced notes, each `duty` of its slot long, with raised-cosine edges."""
    env = np.zeros(n, dtype=np.float64)
    slot = n / pulses
    for p in range(pulses):
        start = int(round(p * slot))
        length = max(1, int(round(duty * slot)))
        r = min(ramp, length // 2)
        note = np.ones(length)
        if r > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)  # 0 -> 1
            note[:r] = edge
            note[length - r:] = edge[::-1]
        env[start:start + length] = note[: n - start]
    return env


def sonify(attrs: dict[str, str], rng: np.random.Generator, sr: int = 16000,
           seconds: float = 1.0) -> np.ndarray:
    """The sound of one shapes sample: float32 mono, `sr * seconds` samples in [-1, 1]."""
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool) or sr < 1000:
        raise GanError(f"sonify: sample rate must be an integer >= 1000 Hz, got {sr!r}")
    if not seconds > 0:
        raise GanError(f"sonify: seconds must be > 0, got {seconds!r}")
    f0 = _lookup(PITCHES, attrs, "color")
    partials = _lookup(TIMBRES, attrs, "shape")
    rms = _lookup(LOUDNESS, attrs, "size")
    pulses = _lookup(PULSES, attrs, "position")

    n = int(round(sr * seconds))
    t = np.arange(n) / sr  # (n,)
    f0 = f0 * rng.uniform(0.99, 1.01)
    phases = rng.uniform(0.0, 2 * np.pi, size=len(partials))
    tone = np.zeros(n)
    for (k, amp), phi in zip(partials, phases):
        if k * f0 < 0.45 * sr:  # keep partials below Nyquist so nothing aliases at low rates
            tone += amp * np.sin(2 * np.pi * k * f0 * t + phi)
    # Normalise by RMS, not peak: loudness should depend on size only, not on timbre or phases.
    tone /= np.sqrt(np.mean(tone ** 2)) + 1e-12

    duty = rng.uniform(0.55, 0.65)
    env = _envelope(n, pulses, duty, int(RAMP_SECONDS * sr))
    gain = rms * rng.uniform(0.95, 1.05)
    return np.clip(gain * env * tone, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sr: int) -> None:
    """Write mono (n,) or multichannel (n, c) float samples in [-1, 1] as 16-bit PCM WAV."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or samples.shape[0] == 0:
        raise GanError(f"write_wav {path}: expected a non-empty (n,) or (n, channels) array, "
                       f"got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise GanError(f"write_wav {path}: samples contain NaN or inf")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), int(sr), subtype="PCM_16", format="WAV")


def read_wav(path: str | Path, expected_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as a float32 mono array (channels averaged) and its sample rate.

    Raises GanError naming the file when it is missing, unreadable, empty, or not at `expected_sr`.
    """
    path = Path(path)
    if not path.is_file():
        raise GanError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (n, channels)
    except (RuntimeError, ValueError, TypeError, OSError) as e:  # LibsndfileError is a RuntimeError
        raise GanError(f"cannot read audio file {path}: {e} "
                       "(expected a WAV/FLAC/OGG file that libsndfile can decode)") from None
    if data.shape[0] == 0:
        raise GanError(f"audio file {path} is empty (0 samples)")
    if expected_sr is not None and sr != expected_sr:
        raise GanError(f"audio file {path} has sample rate {sr} Hz; expected {expected_sr} Hz "
                       "(resample it, e.g. with `ffmpeg -i in.wav -ar 16000 out.wav`)")
    return data.mean(axis=1).astype(np.float32), int(sr)


def wav_truncation(path: str | Path) -> str | None:
    """Why a RIFF/WAVE file is cut short (its data chunk declares more bytes than the file holds),
    or None. libsndfile reads what is there without complaint, so a half-copied WAV would otherwise
    train as a clip that falls silent early. Other formats (FLAC, OGG, RF64) are not inspected."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = f.read(4), int.from_bytes(f.read(4), "little")
            if chunk == b"data":
                held = size - pos - 8
                # 0 and 0xFFFFFFFF mean "unknown": streaming writers (ffmpeg to a pipe) leave them.
                if length not in (0, 0xFFFFFFFF) and held < length:
                    return (f"audio file {path} is truncated: its header declares {length:,} bytes of "
                            f"samples, the file holds {held:,}")
                return None
            pos += 8 + length + (length & 1)  # chunks are padded to an even length
    return None
