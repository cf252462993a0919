"""The offline video classifier and its VFID analogue, on a tiny moving-shapes set (48 + 16 clips
of 4 frames at 16 px) so the whole file trains in seconds on one thread."""

from pathlib import Path

import pytest
import torch

from gan.errors import GanError
from gan.metrics import video_classifier as V
from gan.metrics.video_classifier import (
    IGNORE,
    VideoAttributeClassifier,
    load_clip_split,
    load_or_train_video_classifier,
    motion_labels,
    train_video_classifier,
    vfid,
    video_features,
)

moving_shapes = pytest.importorskip("gan.data.moving_shapes", reason="the moving-shapes data module is not available")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video-clf") / "moving"
    moving_shapes.write_moving_shapes(root, 48, 16, frames=4, size=16, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(clips_root):
    # 60 epochs of 3 steps (~3 s): enough for colour on 48 clips; shape and motion need far more data
    return train_video_classifier(clips_root / "train", clips_root / "test", resolution=16, epochs=60,
                                  batch_size=16, progress=False)


def test_classifier_shapes():
    model = VideoAttributeClassifier(resolution=16, frames=4, width=8).eval()
    clips = torch.rand(2, 4, 3, 16, 16) * 2 - 1  # (B, T, 3, H, W)
    with torch.no_grad():
        logits = model(clips)
        assert {n: tuple(v.shape) for n, v in logits.items()} == {
            "color": (2, 8), "shape": (2, 3), "size": (2, 2), "motion": (2, 4)}
        assert model.features(clips).shape == (2, 128)
    as_bytes = ((clips + 1) * 127.5).round().to(torch.uint8)
    assert torch.allclose(video_features(model, as_bytes), video_features(model, as_bytes.float() / 127.5 - 1))
    with pytest.raises(GanError, match=r"\(N, 4, 3, 16, 16\)"):
        video_features(model, torch.zeros(2, 5, 3, 16, 16))  # wrong clip length
    with pytest.raises(GanError, match="power of two"):
        VideoAttributeClassifier(resolution=24)


def test_motion_labels_bin_the_displacement():
    rows = [{"motion": {"centers": [[8, 8], [9, 8], [10, 8.5]]}},  # right
            {"motion": {"centers": [[8, 8], [8, 7], [7.5, 5]]}},  # up
            {"motion": {"centers": [[8, 8], [7, 9], [5, 11]]}},  # down and left, exactly 45 deg -> left
            {"motion": {"centers": [[8, 8], [8.1, 8], [8.2, 8.1]]}}]  # still: no label
    assert motion_labels(rows, 3).tolist() == [0, 3, 2, IGNORE]
    assert motion_labels(rows, 2).tolist()[:2] == [0, 3]  # only the first `frames` centres count
    with pytest.raises(GanError, match="row 0.*motion.centers"):
        motion_labels([{"motion": {}}], 3)


def test_short_training_beats_chance(trained, clips_root):
    model, acc = trained
    assert set(acc) == {"color", "shape", "size", "motion", "mean", "all"}
    assert acc["color"] > 0.5, acc  # chance is 1/8
    assert model.config.frames == 4 and model.config.resolution == 16
    clips, labels = load_clip_split(clips_root / "test", 16)
    assert clips.shape == (16, 4, 3, 16, 16) and clips.dtype == torch.uint8 and labels.shape == (16, 4)
    preds = V.predict_video_attributes(model, clips)
    assert (preds["color"] == labels[:, 0]).float().mean().item() == pytest.approx(acc["color"])


def test_vfid_orders_real_perturbed_and_noise(trained, clips_root):
    model, _ = trained
    real, _ = load_clip_split(clips_root / "train", 16)  # (48, 4, 3, 16, 16) uint8
    g = torch.Generator().manual_seed(0)
    perturbed = real.float() / 127.5 - 1 + torch.randn(real.shape, generator=g) * 0.02
    noise = torch.randint(0, 256, real.shape, generator=g, dtype=torch.uint8)
    assert abs(vfid(model, real, real)) < 1e-6
    near, far = vfid(model, real, perturbed), vfid(model, real, noise)
    assert far > 2 * near, (near, far)
    with pytest.raises(GanError, match="rank-deficient"):
        vfid(model, real, noise, allow_rank_deficient=False)  # 48 clips < 129 for 128-dim features


def test_cache_round_trip_and_damage(clips_root, monkeypatch):
    model, acc = load_or_train_video_classifier(clips_root, resolution=16, progress=False)
    [folder] = (clips_root / ".cache").glob("video-classifier-*-16")
    assert (folder / "accuracy.json").is_file() and not list(folder.parent.glob("*.tmp-*"))
    clips = torch.rand(3, 4, 3, 16, 16) * 2 - 1

    def no_training(*args, **kwargs):
        raise AssertionError("the second call must load the cache")

    with monkeypatch.context() as m:
        m.setattr(V, "train_video_classifier", no_training)
        again, acc_again = load_or_train_video_classifier(clips_root, resolution=16, progress=False)
    assert acc_again == pytest.approx(acc, nan_ok=True)
    assert torch.allclose(video_features(model, clips), video_features(again, clips), atol=1e-6)
    for weights in folder.glob("*.safetensors"):
        weights.write_bytes(b"not a model")
    with pytest.warns(UserWarning, match="unreadable"):
        retrained, _ = load_or_train_video_classifier(clips_root, resolution=16, progress=False)
    assert video_features(retrained, clips).shape == (3, 128)


def test_dataset_without_splits_is_a_gan_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(GanError, match="train/ and test/"):
        load_or_train_video_classifier(tmp_path, resolution=16, progress=False)
    with pytest.raises(GanError, match="metadata.jsonl not found"):
        train_video_classifier(tmp_path / "train", tmp_path / "test", resolution=16, progress=False)
