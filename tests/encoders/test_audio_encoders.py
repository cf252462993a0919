import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
from torchaudio import pipelines
from torchaudio.models import wav2vec2_model

from gan.data.audio import PITCHES, PULSES, TIMBRES, sonify, write_wav
from gan.encoders.audio import (
    AudioEncoder,
    LogMel,
    build_audio_encoder,
    load_audio,
    load_audio_encoder,
)
from gan.encoders.audio_pretrained import TorchaudioPipelineEncoder, weights_file
from gan.errors import GanError

TINY = dict(width=4, token_dim=8, pooled_dim=6, n_mels=32)


def attrs(color="red", shape="circle", size="large", position="center"):
    return {"color": color, "shape": shape, "size": size, "position": position}


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.wav"
    write_wav(path, sonify(attrs(), np.random.default_rng(0)), 16000)
    return path


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return AudioEncoder(**TINY)


# ------------------------------------------------------------------------------ load_audio


def test_load_audio_reads_a_shapes_wav_as_is(clip):
    wave, report = load_audio(clip)
    assert wave.dtype == torch.float32 and wave.shape == (16000,)
    assert report == {"file": str(clip), "rate": 16000, "resampled_to": None, "channels": 1,
                      "downmixed": False, "cropped": False, "seconds": 1.0}
    # 16-bit PCM round trip
    assert torch.allclose(wave, torch.from_numpy(sonify(attrs(), np.random.default_rng(0))), atol=1e-4)


def test_load_audio_downmixes_and_resamples_stereo_44k(tmp_path):
    sr, seconds = 44100, 0.5
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone, 0.5 * tone], axis=1), sr)  # (n, 2)
    wave, report = load_audio(path, 16000)
    assert report["rate"] == 44100 and report["resampled_to"] == 16000
    assert report["channels"] == 2 and report["downmixed"] and report["seconds"] == 0.5
    assert wave.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    peak_hz = spectrum.argmax() * 16000 / len(wave)  # 2 Hz bins
    assert abs(peak_hz - 440) <= 2
    assert abs(wave.abs().max().item() - 0.375) < 0.02  # mean of the channels' amplitudes

    cut, report = load_audio(path, 16000, max_seconds=0.25)
    assert cut.shape == (4000,) and report["cropped"]


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(GanError, match="not found.*nothere.wav"):
        load_audio(tmp_path / "nothere.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(GanError, match="cannot read audio file .*notes.wav"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    sf.SoundFile(empty, "w", samplerate=16000, channels=1, format="WAV").close()  # header only
    with pytest.raises(GanError, match="empty.wav is empty"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(GanError, match="nan.wav contains only NaN"):
        load_audio(nan)


# ------------------------------------------------------------------------------ LogMel


def test_log_mel_shape_loudness_and_batch_independence():
    wave = torch.from_numpy(sonify(attrs(size="small"), np.random.default_rng(1)))[None]  # (1, T)
    mel = LogMel(n_mels=64)
    quiet = mel(wave)
    assert quiet.shape == (1, 64, 101)  # 10 ms hop, centered frames
    loud = mel(2 * wave)
    assert loud.max() - quiet.max() == pytest.approx(20 * np.log10(2) / 40, abs=1e-3)  # +6 dB
    assert loud.mean() > quiet.mean()
    # top_db is relative to each clip, not to the loudest clip of the batch
    batch = mel(torch.cat([wave, 10 * torch.randn_like(wave)]))
    assert torch.allclose(batch[:1], quiet, atol=1e-5)


# ------------------------------------------------------------------------------ AudioEncoder


def test_audio_encoder_shapes_and_mask(tiny):
    assert tiny.name == "audio" and tiny.trainable
    assert (tiny.token_dim, tiny.pooled_dim, tiny.max_length) == (8, 6, 26)
    out = tiny(torch.randn(3, 12000) * 0.1)  # shorter than the clip: zero-padded
    assert out.pooled.shape == (3, 6) and out.tokens.shape == (3, 26, 8)
    assert out.mask.dtype == torch.bool and out.mask.all() and out.mask.shape == (3, 26)
    assert tiny(torch.randn(1, 20000)).tokens.shape == (1, 26, 8)  # longer: cropped
    half = AudioEncoder(**TINY, clip_seconds=0.5, normalize=True)
    out = half(torch.randn(2, 8000))
    assert out.tokens.shape[1] == half.max_length == 13
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(2))
    with pytest.raises(GanError, match="batch, samples"):
        tiny(torch.randn(16000))


def test_audio_encoder_eval_is_deterministic_and_training_has_gradients(tiny, clip):
    a, b = tiny.encode_files([clip, clip]), tiny.encode_files([clip])
    assert torch.equal(a.pooled[0], a.pooled[1]) and torch.allclose(a.pooled[:1], b.pooled, atol=1e-6)
    assert tiny.training  # encode_files restores the mode
    out = tiny(torch.randn(2, 16000) * 0.1)
    (out.pooled.sum() + out.tokens.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.parameters())


def test_audio_encoder_save_export_and_load_round_trip(tiny, clip, tmp_path):
    ref = tiny.encode_files([clip])
    tiny.save_pretrained(tmp_path / "plain")
    again = AudioEncoder.from_pretrained(tmp_path / "plain")
    # allclose, not equal: the reloaded weights can take a different BLAS path (1-ulp differences)
    assert again.config.width == 4 and torch.allclose(again.encode_files([clip]).tokens, ref.tokens, atol=1e-6)

    spec = tiny.export(tmp_path / "run")
    assert spec == {"type": "audio", "path": "audio_encoder", "trainable": True}
    loaded = load_audio_encoder(json.loads(json.dumps(spec)), tmp_path / "run")
    assert torch.allclose(loaded.encode_files([clip]).pooled, ref.pooled, atol=1e-6)

    frozen = build_audio_encoder(str(tmp_path / "run"))  # the run folder or the subfolder both work
    assert not frozen.trainable and not any(p.requires_grad for p in frozen.parameters())
    assert torch.allclose(frozen.encode_files([clip]).pooled, ref.pooled, atol=1e-6)
    assert load_audio_encoder(frozen.export(tmp_path / "again"), tmp_path / "again").trainable is False


def test_build_audio_encoder_errors(tmp_path):
    assert isinstance(build_audio_encoder("scratch", **TINY), AudioEncoder)
    with pytest.raises(GanError, match="scratch.*torchaudio:<BUNDLE>"):
        build_audio_encoder("wav2vec")
    with pytest.raises(GanError, match="no exported encoder"):
        build_audio_encoder(str(tmp_path))
    with pytest.raises(GanError, match="'scratch'.*colour"):
        build_audio_encoder("scratch", colour=1)
    with pytest.raises(GanError, match="not a torchaudio wav2vec2-family bundle.*HUBERT_BASE"):
        build_audio_encoder("torchaudio:TACOTRON2_WAVERNN_CHAR_LJSPEECH")
    with pytest.raises(GanError, match="token_dim must be even"):
        build_audio_encoder("scratch", token_dim=7)
    with pytest.raises(GanError, match="f_max"):
        build_audio_encoder("scratch", sample_rate=8000)
    with pytest.raises(GanError, match="unknown 'type'"):
        load_audio_encoder({"type": "mp3"}, tmp_path)
    with pytest.raises(GanError, match="no config.json"):
        load_audio_encoder({"type": "audio"}, tmp_path)
    with pytest.raises(GanError, match="single path"):
        AudioEncoder(**TINY).encode_files(str(tmp_path / "a.wav"))


# ------------------------------------------------------------------------------ torchaudio bundles


def test_pipeline_missing_weights_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    want = tmp_path / "checkpoints" / "wav2vec2_fairseq_base_ls960.pth"
    with pytest.raises(GanError) as err:
        build_audio_encoder("torchaudio:WAV2VEC2_BASE")
    msg = str(err.value)
    assert "WAV2VEC2_BASE" in msg and str(want) in msg
    assert "https://download.pytorch.org/torchaudio/models/wav2vec2_fairseq_base_ls960.pth" in msg


def test_pipeline_loads_a_tiny_bundle_offline(tmp_path, monkeypatch, clip):
    """The real loading path (bundle.get_model from the hub cache) on a 2-layer stand-in bundle."""
    params = dict(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
        extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1, encoder_num_heads=2,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)
    bundle = pipelines.Wav2Vec2Bundle(_path="tiny_test.pth", _params=params, _sample_rate=16000,
                                      _normalize_waveform=True, _model_type="Wav2Vec2")
    monkeypatch.setattr(pipelines, "TINY_TEST", bundle, raising=False)
    monkeypatch.setattr(pipelines, "__all__", [*pipelines.__all__, "TINY_TEST"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(0)
    _, file = weights_file(bundle)
    file.parent.mkdir(parents=True)
    torch.save(wav2vec2_model(**params).state_dict(), file)

    enc = build_audio_encoder("torchaudio:TINY_TEST", clip_seconds=0.5)
    assert isinstance(enc, TorchaudioPipelineEncoder)
    assert not enc.trainable and (enc.token_dim, enc.pooled_dim) == (16, 16)
    out = enc.encode_files([clip])
    assert out.tokens.shape == (1, enc.max_length, 16) and out.mask.all()
    # per-clip input normalisation: a clip's features do not depend on its batch
    wave = torch.from_numpy(sonify(attrs(), np.random.default_rng(0)))[None, :8000]
    alone = enc(wave)
    both = enc(torch.cat([wave, 5 * torch.randn_like(wave)]))
    assert torch.allclose(alone.pooled, both.pooled[:1], atol=1e-4)
    # a short file: padding frames are masked and left out of the mean
    short = enc(wave, torch.tensor([4000]))
    assert 0 < short.mask.sum() < enc.max_length and short.tokens[~short.mask].abs().sum() == 0
    assert load_audio_encoder(enc.export(tmp_path), tmp_path).max_length == enc.max_length


def test_pipeline_with_real_weights(clip):
    url, file = weights_file(pipelines.WAV2VEC2_BASE)
    if not file.is_file():
        pytest.skip(f"WAV2VEC2_BASE weights not present at {file} (download {url})")
    enc = build_audio_encoder("torchaudio:WAV2VEC2_BASE")
    out = enc.encode_files([clip])
    assert out.tokens.shape == (1, enc.max_length, 768) and out.pooled.shape == (1, 768)
    assert torch.isfinite(out.tokens).all()


# ------------------------------------------------------------------------------ it learns


@pytest.fixture
def one_thread():
    """Tiny ops on a busy 2-core machine run ~30x faster on one thread (no OpenMP barrier waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_scratch_encoder_learns_pitch(one_thread):
    """A tiny encoder + linear head learns the 8 colors (pitches) of 64 varied shapes clips.

    Timbre, loudness and rhythm are drawn at random, so the head must read pitch; 40 full-batch
    steps reach ~100% on the training clips and on 32 fresh ones (about 5 s on one CPU thread).
    """
    rng = np.random.default_rng(0)
    colors = list(PITCHES)

    def clips(n):
        labels = torch.arange(n) % 8
        waves = torch.stack([torch.from_numpy(sonify(attrs(
            colors[int(c)], rng.choice(list(TIMBRES)), rng.choice(["small", "large"]), rng.choice(list(PULSES))),
            rng)) for c in labels])  # (n, T)
        return waves, labels

    waves, labels = clips(64)
    torch.manual_seed(0)
    enc = AudioEncoder(width=8, token_dim=32, pooled_dim=32)
    head = nn.Linear(32, 8)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(40):
        loss = nn.functional.cross_entropy(head(enc(waves).pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_waves, test_labels = clips(32)
    with torch.no_grad():
        enc.eval()
        acc = (head(enc(waves).pooled).argmax(1) == labels).float().mean().item()
        test_acc = (head(enc(test_waves).pooled).argmax(1) == test_labels).float().mean().item()
    assert acc >= 0.8, f"train accuracy {acc:.2f} after 40 steps (chance 0.125), last loss {loss.item():.3f}"
    assert test_acc >= 0.6, f"accuracy on fresh clips {test_acc:.2f} (train {acc:.2f}, chance 0.125)"
