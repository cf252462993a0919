import itertools
import math

import numpy as np
import pytest
import torch
import torchaudio

from gan.data.audio import sonify
from gan.errors import GanError
from gan.joint import mel as M
from gan.joint.mel import MelSettings, mel_to_waveform, waveform_to_mel

pytestmark = pytest.mark.usefixtures("one_thread")

S = MelSettings()


def _sine(freq: float, amp: float, s: MelSettings = S) -> torch.Tensor:
    t = torch.arange(s.length, dtype=torch.float64) / s.sample_rate
    return (amp * torch.sin(2 * math.pi * freq * t)).float()[None]  # (1, T)


def _mel_centres(s: MelSettings) -> np.ndarray:
    """HTK mel band centres in Hz, computed here rather than taken from torchaudio."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    pts = np.linspace(mel(s.f_min), mel(s.f_max), s.n_mels + 2)
    return 700.0 * (10.0 ** (pts / 2595.0) - 1.0)[1:-1]


def _shapes_sounds(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """Real shapes sounds, quantised to int16 as the dataset's WAVs are."""
    combos = [dict(color=c, shape=sh, size=sz, position=p) for c, sh, sz, p in itertools.product(
        ("red", "cyan", "white"), ("circle", "square", "triangle"), ("small", "large"), ("top left", "center"))]
    combos = [combos[i] for i in np.random.default_rng(seed).choice(len(combos), n, replace=False)]
    rng = np.random.default_rng(seed)
    waves = torch.from_numpy(np.stack([sonify(a, rng, S.sample_rate, S.seconds) for a in combos]))
    return (waves * 32767).round() / 32767, combos  # (n, T)


def test_shapes_and_range():
    waves, _ = _shapes_sounds(4)
    mel = waveform_to_mel(waves, S)
    assert mel.shape == (4, 1, 64, 64) and mel.dtype == torch.float32
    assert mel.min().item() == -1.0  # the gaps between notes are below the -40 dB floor
    assert -0.2 < mel.max().item() < 1.0  # loud notes peak near +37 dB: inside the scale, unclamped
    back = mel_to_waveform(mel, S)
    assert back.shape == (4, 16000) and back.dtype == torch.float32
    assert back.abs().max().item() <= 1.0 and back.abs().max().item() > 0.05


def test_silence_is_exactly_minus_one():
    mel = waveform_to_mel(torch.zeros(2, 16000), S)
    assert torch.equal(mel, torch.full((2, 1, 64, 64), -1.0))
    short = waveform_to_mel(_sine(500.0, 0.5)[:, :8000], S)  # 0.5 s: frames past the end are silence
    assert short.shape == (1, 1, 64, 64)
    assert torch.equal(short[..., 33:], torch.full((1, 1, 64, 31), -1.0))
    assert short[..., 5:28].max().item() > 0.5


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_sine_peaks_in_the_nearest_mel_band(freq):
    mel = waveform_to_mel(_sine(freq, 0.3), S)[0, 0]  # (M, F)
    peak = mel[:, 8:56].mean(1).argmax().item()  # away from the clip's edges
    assert peak == int(np.abs(_mel_centres(S) - freq).argmin())


def test_db_scale_closed_form():
    # A 1000 Hz sine is exactly STFT bin 64 (64 cycles per 1024-sample window). Under a periodic
    # Hann window its power spectrum is (A N / 4)^2 at bin 64 and (A N / 8)^2 at bins 63 and 65.
    a, n = 0.5, S.n_fft
    power = torch.zeros(n // 2 + 1, dtype=torch.float64)
    power[64] = (a * n / 4) ** 2
    power[63] = power[65] = (a * n / 8) ** 2
    fb = torchaudio.functional.melscale_fbanks(n // 2 + 1, S.f_min, S.f_max, S.n_mels, S.sample_rate,
                                               mel_scale="htk").double()  # (K, M)
    db = 10 * torch.log10((power @ fb).clamp(min=1e-10))
    expected = ((db - S.db_floor) / (S.db_ceil - S.db_floor) * 2 - 1).clamp(-1, 1)  # (M,)
    got = waveform_to_mel(_sine(1000.0, a), S)[0, 0, :, 32].double()  # a frame well inside the clip
    band = int(expected.argmax())
    # bin 64 alone at full filter weight would be 20 log10(0.5 * 256) = 42.14 dB; the band sums the
    # three bins at triangle weights below 1 (42.4 dB here), so it lands within 2 dB of that
    assert abs(db[band].item() - 42.14) < 2.0
    assert got[band].item() == pytest.approx(expected[band].item(), abs=1e-3)
    near = expected > -1
    assert torch.allclose(got[near], expected[near], atol=2e-3)


def test_round_trip_on_real_sounds():
    waves, _ = _shapes_sounds(6)
    mel = waveform_to_mel(waves, S)
    err = {inv: (waveform_to_mel(mel_to_waveform(mel, S, inverse=inv), S) - mel).abs().mean().item()
           for inv in M.INVERSES}
    # measured on these six clips: KL fit 0.031 (~1.4 dB), least squares by multiplicative updates
    # 0.048, torchaudio's relu of a min-norm solve 0.188
    assert err["kl"] < 0.04, err
    assert err["euclidean"] > 1.3 * err["kl"], err
    assert err["lstsq"] > 4 * err["kl"], err
    # nnls_iter=0 is torchaudio's solve whatever the solver asked for
    plain = mel_to_waveform(mel[:1], S, n_iter=2, nnls_iter=0)
    assert torch.equal(plain, mel_to_waveform(mel[:1], S, n_iter=2, inverse="lstsq"))


def test_an_unknown_inverse_solver_is_an_error():
    with pytest.raises(GanError, match="unknown solver 'nmf'.*'kl', 'euclidean', 'lstsq'"):
        mel_to_waveform(torch.full((1, 1, S.n_mels, S.frames), -1.0), S, inverse="nmf")


def test_inversion_is_deterministic_and_leaves_the_rng_alone():
    waves, _ = _shapes_sounds(2)
    mel = waveform_to_mel(waves, S)
    torch.manual_seed(123)
    a = mel_to_waveform(mel, S, n_iter=4, nnls_iter=10)
    after = torch.rand(3)
    torch.manual_seed(123)
    b = mel_to_waveform(mel, S, n_iter=4, nnls_iter=10)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), after)
    assert torch.equal(after, torch.manual_seed(123) and torch.rand(3))
    c = mel_to_waveform(mel, S, n_iter=4, nnls_iter=10, seed=1)
    assert not torch.equal(a, c)


def test_large_batches_are_inverted_in_chunks_with_the_same_result(monkeypatch):
    from gan.joint import mel as mel_module

    waves, _ = _shapes_sounds(3)
    mel = waveform_to_mel(waves, S)
    monkeypatch.setattr(mel_module, "CHUNK", 1)  # three chunks of one: each gets the same phase draw
    chunked = mel_to_waveform(mel, S, n_iter=4, nnls_iter=10)
    for i in range(3):  # item i alone (a batch of one) gives exactly its chunked sound
        assert torch.equal(chunked[i], mel_to_waveform(mel[i:i + 1], S, n_iter=4, nnls_iter=10)[0])


def test_transforms_are_cached():
    waveform_to_mel(torch.zeros(1, 16000), S)
    first = M._transforms(S, torch.device("cpu"))
    waveform_to_mel(torch.zeros(1, 16000), MelSettings())  # equal settings: same objects
    assert M._transforms(MelSettings(), torch.device("cpu"))[0] is first[0]
    other = MelSettings(n_mels=32, frames=32)
    assert waveform_to_mel(torch.zeros(1, 16000), other).shape == (1, 1, 32, 32)
    assert M._transforms(other, torch.device("cpu"))[0] is not first[0]


def test_settings_round_trip_and_errors():
    s = MelSettings(n_mels=32, frames=32, db_floor=-50.0)
    d = s.to_dict()
    assert d["n_mels"] == 32 and d["hop_length"] == 250 and len(d) == 10
    assert MelSettings.from_dict(d) == s
    with pytest.raises(GanError, match="unknown key 'n_mel'"):
        MelSettings.from_dict({**d, "n_mel": 64})
    missing = dict(d)
    del missing["f_max"]
    with pytest.raises(GanError, match="missing key 'f_max'"):
        MelSettings.from_dict(missing, where="generator/config.json mel")
    with pytest.raises(GanError, match="'frames' is '64'; expected a positive integer"):
        MelSettings.from_dict({**d, "frames": "64"})
    with pytest.raises(GanError, match="f_max"):
        MelSettings.from_dict({**d, "f_max": 9000.0})


def test_bad_shapes_are_gan_errors():
    with pytest.raises(GanError, match=r"shape \(B, T\)"):
        waveform_to_mel(torch.zeros(16000), S)
    with pytest.raises(GanError, match=r"\(B, 1, 64, 64\), got \(2, 64, 64\)"):
        mel_to_waveform(torch.zeros(2, 64, 64), S)


def test_sampler_waveforms_in_chunks_with_progress_are_the_whole_batch_inverted_at_once():
    from gan.joint.mel import CHUNK
    from gan.joint.models import JointGenerator
    from gan.joint.sampling import JointSampler

    small = MelSettings(n_mels=16, hop_length=1000, frames=16)
    G = JointGenerator(image_resolution=16, audio_resolution=16, z_dim=4, base_channels=4, audio_channels=4,
                       max_channels=8, trunk_resolution=8, mel=small.to_dict())
    sampler = JointSampler(G)
    mels = torch.rand(CHUNK + 5, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    shown = sampler.waveforms(mels, iters=2, progress=True)  # two chunks, a bar over them
    assert shown.shape == (CHUNK + 5, 16000)
    assert torch.equal(shown, mel_to_waveform(mels, small, n_iter=2))
