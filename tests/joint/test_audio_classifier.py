import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.data.audio import sonify
from gan.errors import GanError
from gan.joint import audio_classifier as AC
from gan.joint.audio_classifier import (
    audio_attribute_accuracy,
    audio_features,
    load_or_train_audio_classifier,
    predict_audio_attributes,
    train_audio_classifier,
)
from gan.joint.mel import MelSettings
from gan.metrics.attributes import NAMES, AttributeClassifier
from gan.metrics.stats import fid_from_features

shapes = pytest.importorskip("gan.data.shapes", reason="the shapes data module is not available")
pytestmark = pytest.mark.usefixtures("one_thread")

S = MelSettings()


@pytest.fixture(scope="module")
def small_sounds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio-attr") / "shapes"
    shapes.write_shapes(root, n_train=600, n_test=200, size=16, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(small_sounds):
    return train_audio_classifier(small_sounds, S, epochs=6, batch_size=64, width=8, progress=False)


def _rows(split: Path) -> list[dict]:
    return [json.loads(line)["attributes"] for line in (split / "metadata.jsonl").read_text().splitlines()]


def test_short_training_beats_chance(trained):
    model, acc = trained
    assert model.config.in_channels == 1 and model.config.resolution == 64
    assert set(acc) == {"color", "shape", "size", "position", "mean", "all"}
    # chance: 1/8 color, 1/3 shape, 1/2 size, 1/5 position
    assert all(acc[n] > 0.9 for n in NAMES), acc  # measured 1.0 on each


def test_predictions_on_waveforms_match_the_reported_accuracy(trained, small_sounds):
    model, acc = trained
    rng = np.random.default_rng(0)
    # fresh sounds (not from the dataset), passed as float waveforms the way generated ones come
    wanted = [shapes.sample_attributes(rng) for _ in range(200)]
    waves = torch.from_numpy(np.stack([sonify(a, rng) for a in wanted]))  # (200, 16000)
    preds = predict_audio_attributes(model, waves, S, batch_size=64)
    assert preds["size"].shape == (200,) and preds["size"].dtype == torch.long
    fresh = audio_attribute_accuracy(model, waves, wanted, S)
    truth = shapes.ATTRIBUTES["size"]
    assert fresh["size"] == pytest.approx(np.mean([truth[p] == a["size"] for p, a in zip(preds["size"], wanted)]))
    for n in NAMES:  # 200 fresh clips vs the 200 test clips: same distribution, so close accuracies
        assert abs(fresh[n] - acc[n]) < 0.15, (n, fresh, acc)


def test_features_and_fad(trained):
    model, _ = trained
    rng = np.random.default_rng(1)
    def clips(attrs, n):
        return torch.from_numpy(np.stack([sonify(attrs, rng) for _ in range(n)]))
    loud = {"color": "red", "shape": "square", "size": "large", "position": "center"}
    quiet = {**loud, "size": "small", "color": "white"}
    a, b, c = audio_features(model, clips(loud, 40), S, batch_size=16), audio_features(model, clips(loud, 40), S), \
        audio_features(model, clips(quiet, 40), S)
    assert a.shape == (40, model.config.feature_dim) and a.dtype == torch.float32
    # same sound class twice vs two different ones: the FAD has to tell them apart
    same, diff = fid_from_features(a, b, allow_rank_deficient=True), fid_from_features(a, c, allow_rank_deficient=True)
    assert diff > 5 * same, (same, diff)


def test_load_or_train_reuses_the_cache(small_sounds, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for split in ("train", "test"):  # links keep the fixture's files but give this test its own .cache
        (root / split).symlink_to(small_sounds / split)
    calls = []

    def quick(dataset_root, settings, progress=True, **kw):
        calls.append(dataset_root)
        return train_audio_classifier(dataset_root, settings, epochs=1, width=4, max_train=200, progress=False)

    monkeypatch.setattr(AC, "train_audio_classifier", quick)
    m1, acc1 = load_or_train_audio_classifier(root, S, progress=False)
    folders = [f for f in (root / ".cache").iterdir() if f.is_dir()]
    assert len(calls) == 1 and len(folders) == 1 and folders[0].name.startswith("audio-attribute-classifier-")
    assert (folders[0] / "accuracy.json").is_file() and json.loads((folders[0] / "mel_settings.json").read_text()) == S.to_dict()
    m2, acc2 = load_or_train_audio_classifier(root, S, progress=False)
    assert len(calls) == 1 and acc2 == pytest.approx(acc1)
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m1.eval()(x)["color"], m2(x)["color"])
    # other mel settings are another classifier
    load_or_train_audio_classifier(root, MelSettings(db_floor=-50.0), progress=False)
    assert len(calls) == 2 and len([f for f in (root / ".cache").iterdir() if f.is_dir()]) == 2


def test_wrong_shapes_and_settings_are_gan_errors(trained, tmp_path):
    model, _ = trained
    with pytest.raises(GanError, match=r"expected waveforms of shape \(N, 16000\).*got \(3, 8000\)"):
        predict_audio_attributes(model, torch.zeros(3, 8000), S)
    with pytest.raises(GanError, match=r"expected waveforms of shape \(N, 16000\).*got \(16000,\)"):
        audio_features(model, torch.zeros(16000), S)
    with pytest.raises(GanError, match=r"model takes \(1, 64, 64\) inputs but the mel settings make \(1, 32, 32\)"):
        predict_audio_attributes(model, torch.zeros(2, 16000), MelSettings(n_mels=32, frames=32))
    image_model = AttributeClassifier(width=4, feature_dim=8)
    with pytest.raises(GanError, match=r"model takes \(3, 32, 32\) inputs"):
        audio_features(image_model, torch.zeros(2, 16000), S)
    with pytest.raises(GanError, match="n_mels == frames.*n_mels=64, frames=48"):
        load_or_train_audio_classifier(tmp_path, MelSettings(frames=48), progress=False)
    with pytest.raises(GanError, match="2 waveforms for 1"):
        audio_attribute_accuracy(model, torch.zeros(2, 16000), [{"color": "red"}], S)
