"""The moving-shapes clips, measured from their pixels, metadata and files."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gan.data import moving_shapes as ms
from gan.data import shapes
from gan.data.metadata import check_dataset, read_metadata
from gan.errors import GanError

FRAMES, SIZE = 4, 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("moving") / "ms"
    ms.write_moving_shapes(out, 3, 2, frames=FRAMES, size=SIZE, seed=0, progress=False)
    return out


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_layout_and_metadata(tiny):
    info = json.loads((tiny / "info.json").read_text())
    assert info["generator"] == "gan.data.moving_shapes"
    assert (info["frames"], info["size"], info["counts"]) == (FRAMES, SIZE, {"train": 3, "test": 2})
    assert check_dataset(tiny) == []  # file_name (first frame) and audio_file are valid
    for split, n in (("train", 3), ("test", 2)):
        rows = read_metadata(tiny / split)
        assert len(rows) == n
        for row in rows:
            assert row["frames"] == FRAMES and row["file_name"] == f"{row['clip']}/00000.png"
            assert sorted(p.name for p in (tiny / split / row["clip"]).iterdir()) == [
                f"{t:05d}.png" for t in range(FRAMES)]
            with Image.open(tiny / split / row["clip"] / "00003.png") as im:
                assert im.size == (SIZE, SIZE) and im.mode == "RGB"
            assert shapes.parse_caption(row["text"]) == row["attributes"]
            assert row["text"].endswith("moving " + row["motion"]["direction"])
            wav = sf.info(str(tiny / split / row["audio_file"]))
            assert (wav.samplerate, wav.frames) == (16000, 16000)
            motion = row["motion"]
            assert len(motion["centers"]) == FRAMES and len(motion["pan"]) == 2
            assert 0 <= motion["speed"] <= 2.0 and abs(motion["turn"]) <= ms.TURN
            assert 0.5 <= np.hypot(*motion["pan"]) <= 1.5
    assert [r["wording"] for r in read_metadata(tiny / "test")] == ["seen", "heldout"]
    assert {r["wording"] for r in read_metadata(tiny / "train")} == {"seen"}


def test_deterministic_by_seed(tiny, tmp_path):
    ms.write_moving_shapes(tmp_path / "same", 3, 2, FRAMES, SIZE, 0, False)
    ms.write_moving_shapes(tmp_path / "other", 1, 2, FRAMES, SIZE, 1, False)
    ms.write_moving_shapes(tmp_path / "fewer", 1, 2, FRAMES, SIZE, 0, False)
    base = _tree(tiny)
    assert _tree(tmp_path / "same") == base
    assert _tree(tmp_path / "other")["train/000000/00000.png"] != base["train/000000/00000.png"]
    fewer = _tree(tmp_path / "fewer")  # test clips have their own seed stream
    assert {k: v for k, v in fewer.items() if k.startswith("test/")} == {
        k: v for k, v in base.items() if k.startswith("test/")}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _fill_and_centroid(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The fill colour (the most common bright colour) and the coverage-weighted centroid."""
    a = np.asarray(image).astype(np.float64)  # (H, W, 3)
    bright = a[a.max(-1) > 100]
    colours, counts = np.unique(bright, axis=0, return_counts=True)
    fill = colours[np.argmax(counts)]
    c = int(np.argmax(np.abs(fill - 30)))  # the channel where fill and background differ most
    cov = np.clip((a[..., c] - 30) / (fill[c] - 30), 0, 1)
    cov[cov < 0.3] = 0  # background texture (0..60) is not shape
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]] + 0.5
    return fill, np.array([(cov * xs).sum(), (cov * ys).sum()]) / cov.sum()


def test_shape_moves_smoothly_and_background_pans():
    rng = np.random.default_rng(5)
    for _ in range(6):
        attrs = shapes.sample_attributes(rng)
        images, info = ms.render_clip(attrs, FRAMES, SIZE, rng)
        assert len(images) == FRAMES
        measured = []
        for image in images:
            fill, centroid = _fill_and_centroid(image)
            assert np.all(np.abs(fill - shapes.COLORS[attrs["color"]]) <= shapes.COLOR_JITTER)
            assert tuple(fill) == info["rgb"]
            measured.append(centroid)
        steps = np.diff(measured, axis=0)  # (T - 1, 2), measured from pixels
        drawn = np.diff(info["centers_px"], axis=0)
        assert np.abs(steps - drawn).max() < 0.6, (attrs, steps, drawn)
        lengths = np.hypot(*drawn.T)
        assert np.allclose(lengths, info["speed"]) and 1.0 <= info["speed"] <= 2.0
        assert np.abs(np.diff(lengths)).max() < 1e-9  # constant speed, gently turning heading
        # Background: gray, within 0..60, and different between frames away from the shape.
        frames = np.stack([np.asarray(im).astype(int) for im in images])  # (T, H, W, 3)
        ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
        far = np.ones((SIZE, SIZE), bool)
        for cx, cy in info["centers_px"]:
            far &= np.hypot(xs - cx, ys - cy) > info["side_px"]
        bg = frames[:, far]  # (T, n, 3)
        assert far.sum() > 50 and bg.max() <= ms.TEXTURE_MAX
        assert np.all(bg[..., 0] == bg[..., 1]) and np.all(bg[..., 1] == bg[..., 2])
        for t in range(FRAMES - 1):
            assert np.abs(bg[t + 1] - bg[t]).max() >= 1  # the texture pans


def test_render_clip_is_seeded_and_checks_arguments():
    attrs = {"color": "red", "shape": "triangle", "size": "large", "position": "center"}
    a, info_a = ms.render_clip(attrs, 3, 16, np.random.default_rng(1))
    b, info_b = ms.render_clip(attrs, 3, 16, np.random.default_rng(1))
    assert info_a == info_b and all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(GanError, match="frames"):
        ms.render_clip(attrs, 1, 16, np.random.default_rng(1))
    with pytest.raises(GanError, match="'color' is 'pink'"):
        ms.render_clip({**attrs, "color": "pink"}, 3, 16, np.random.default_rng(1))


def test_write_refuses_bad_arguments_and_cleans_up(tmp_path, monkeypatch):
    with pytest.raises(GanError, match="frames must be an integer in 2..1000"):
        ms.write_moving_shapes(tmp_path / "x", 1, 0, frames=1, progress=False)
    with pytest.raises(GanError, match="n_train"):
        ms.write_moving_shapes(tmp_path / "x", 0, 1, progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(GanError, match="taken.*not empty"):
        ms.write_moving_shapes(tmp_path / "taken", 1, 0, progress=False)

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros(16000, np.float32)

    monkeypatch.setattr(ms, "sonify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ms.write_moving_shapes(tmp_path / "half", 3, 0, frames=2, size=16, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no partial folder left
