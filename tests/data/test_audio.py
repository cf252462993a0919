"""The shapes sonification, measured from the samples, and WAV reading/writing."""

import numpy as np
import pytest
import soundfile as sf

from gan.data import audio, shapes
from gan.data.audio import read_wav, sonify, write_wav
from gan.errors import GanError

SR = 16000


def attrs(**kw) -> dict:
    return {"color": "red", "shape": "circle", "size": "large", "position": "center", **kw}


def spectrum(x: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(x))  # 1 Hz bins for a 1 s clip at 16 kHz


def band(spec: np.ndarray, f: float, width: float = 0.04) -> float:
    """Amplitude of the energy within +-width (relative) of frequency f; pulsing spreads a
    partial over neighbouring bins, so a single-bin peak would be unreliable."""
    lo, hi = int(f * (1 - width)), int(f * (1 + width)) + 1
    return float(np.sqrt(np.sum(spec[lo:hi] ** 2)))


def test_sonify_shape_dtype_range_and_jitter():
    rng = np.random.default_rng(0)
    a = sonify(attrs(shape="triangle"), rng)
    b = sonify(attrs(shape="triangle"), rng)
    assert a.shape == (16000,) and a.dtype == np.float32
    assert np.abs(a).max() <= 1.0 and np.abs(a).max() > 0.1
    assert not np.allclose(a, b)  # jitter: two draws of the same attributes differ
    again = sonify(attrs(shape="triangle"), np.random.default_rng(0))
    assert np.array_equal(a, again)
    assert sonify(attrs(), np.random.default_rng(0), sr=8000, seconds=0.5).shape == (4000,)


def test_every_attribute_combination_is_valid_audio():
    rng = np.random.default_rng(1)
    for color in shapes.COLORS:
        for shape in shapes.SHAPES:
            for size in shapes.SIZES:
                for position in shapes.POSITIONS:
                    x = sonify({"color": color, "shape": shape, "size": size,
                                "position": position}, rng)
                    assert np.all(np.isfinite(x)) and np.abs(x).max() < 1.0


def test_color_sets_a_distinct_dominant_frequency():
    rng = np.random.default_rng(2)
    peaks = []
    for color in shapes.COLORS:
        for shape in shapes.SHAPES:
            f = float(np.argmax(spectrum(sonify(attrs(color=color, shape=shape), rng))))
            assert abs(f / audio.PITCHES[color] - 1) < 0.015, (color, shape, f)
        peaks.append(f)
    ratios = np.array(peaks[1:]) / np.array(peaks[:-1])
    assert np.all(ratios > 1.12)  # ascending and far apart, beyond any jitter


def test_shape_sets_the_harmonic_content():
    rng = np.random.default_rng(3)
    for _ in range(5):
        f0 = audio.PITCHES["green"]
        parts = {}
        for shape in shapes.SHAPES:
            s = spectrum(sonify(attrs(color="green", shape=shape, position="top right"), rng))
            parts[shape] = [band(s, k * f0) / band(s, f0) for k in (2, 3)]
        # Partial k has amplitude 1/k where present: 2nd = 0.5, 3rd = 0.33 of the fundamental.
        assert parts["circle"][0] < 0.02 and parts["circle"][1] < 0.02  # pure sine
        assert parts["square"][0] < 0.02 and abs(parts["square"][1] - 1 / 3) < 0.03  # odd only
        assert abs(parts["triangle"][0] - 1 / 2) < 0.03 and abs(parts["triangle"][1] - 1 / 3) < 0.03


def test_size_sets_loudness():
    rng = np.random.default_rng(4)

    def rms(size):
        return [float(np.sqrt(np.mean(sonify(attrs(size=size, color=c, shape=s, position=p),
                                             rng) ** 2)))
                for c in shapes.COLORS for s in shapes.SHAPES for p in ("top left", "center")]

    small, large = rms("small"), rms("large")
    assert max(small) * 2 < min(large)


def test_position_sets_the_number_of_pulses():
    rng = np.random.default_rng(5)
    for position, expected in audio.PULSES.items():
        for _ in range(3):
            x = sonify(attrs(position=position, shape="square"), rng)
            frames = np.sqrt((x.reshape(-1, 160).astype(np.float64) ** 2).mean(axis=1))  # 10 ms
            on = frames > 0.5 * frames.max()
            onsets = int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))
            assert onsets == expected, (position, onsets)


def test_sonify_rejects_unknown_attributes():
    with pytest.raises(GanError, match="'shape' is 'hexagon'"):
        sonify(attrs(shape="hexagon"), np.random.default_rng(0))
    with pytest.raises(GanError, match="sample rate"):
        sonify(attrs(), np.random.default_rng(0), sr=10)


def test_wav_round_trip(tmp_path):
    x = sonify(attrs(), np.random.default_rng(6))
    path = tmp_path / "sub" / "a.wav"
    write_wav(path, x, SR)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, 16000, "PCM_16")
    y, sr = read_wav(path, expected_sr=SR)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= 1.5 / 32768  # 16-bit quantisation only


def test_read_wav_mixes_stereo_to_mono(tmp_path):
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.1)], axis=1)
    write_wav(tmp_path / "s.wav", stereo, 8000)
    y, sr = read_wav(tmp_path / "s.wav")
    assert sr == 8000 and y.shape == (100,) and np.allclose(y, 0.2, atol=1e-3)


def test_read_wav_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x01not really a wave file at all" * 10)
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(0, np.float32), SR, subtype="PCM_16")
    for path in (empty, garbage, silent, tmp_path / "missing.wav"):
        with pytest.raises(GanError, match=path.name):
            read_wav(path)
    write_wav(tmp_path / "ok.wav", np.zeros(10), 8000)
    with pytest.raises(GanError, match="ok.wav.*8000 Hz; expected 16000"):
        read_wav(tmp_path / "ok.wav", expected_sr=16000)
    with pytest.raises(GanError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), SR)
