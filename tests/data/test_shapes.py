"""The shapes dataset, measured from its pixels, captions and files."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from gan.data import shapes
from gan.data.metadata import read_metadata
from gan.errors import GanError


def measure(image, color: str, shape: str) -> dict:
    """Background, fill colour, box side, box centre and fill ratio, from pixels alone."""
    a = np.asarray(image).astype(np.float64)  # (H, W, 3)
    n = a.shape[0]
    named = np.array(shapes.COLORS[color], dtype=np.float64)
    corners = [a[0, 0], a[0, -1], a[-1, 0], a[-1, -1]]
    # The corner least like the named colour is pure background: a shape touches at most one.
    bg_pixel = max(corners, key=lambda p: np.abs(p - named).sum())
    bg = bg_pixel[0]
    c = int(np.argmax(np.abs(named - bg)))  # the channel where shape and background differ most
    cov = (a[..., c] - bg) / (named[c] - bg)  # rough coverage, refined below
    mask = cov > 0.5
    interior = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(np.roll(mask, dy, 0), dx, 1)
    fill = a[interior].mean(axis=0)  # (3,)
    cov = (a[..., c] - bg) / (fill[c] - bg)  # exact coverage once the true fill level is known
    xs, ys = np.arange(n) + 0.5, (np.arange(n) + 0.5)[:, None]
    cx, cy = (cov * xs).sum() / cov.sum(), (cov * ys).sum() / cov.sum()
    slope = None
    if shape == "triangle":
        # Rows fully inside a triangle are exactly as wide as the depth below the apex, so a
        # line through the row widths has slope base/height (1 for base == height, > 0 if apex
        # up); the area gives the side: side^2 / 2.
        row_sums = cov.sum(axis=1)
        rows = np.nonzero(row_sums > 0.01)[0][1:-1]  # drop the partly covered first/last rows
        slope = np.polyfit(rows + 0.5, row_sums[rows], 1)[0]
        width = height = np.sqrt(2 * cov.sum())
        cy -= height / 6  # the centroid sits 2/3 of the way down the box
    else:
        width, height = cov.sum(axis=1).max(), cov.sum(axis=0).max()
    return {"bg_pixel": bg_pixel, "fill": fill, "interior": int(interior.sum()),
            "width": width, "height": height, "cx": cx, "cy": cy, "slope": slope,
            "ratio": cov.sum() / (width * height)}


@pytest.mark.parametrize("size,count", [(32, 240), (64, 60)])
def test_render_matches_spec_measured_from_pixels(size, count):
    rng = np.random.default_rng(123)
    seen_bg = []
    for _ in range(count):
        attrs = shapes.sample_attributes(rng)
        image, params = shapes.render(attrs, size, rng)
        assert image.size == (size, size) and image.mode == "RGB"
        m = measure(image, attrs["color"], attrs["shape"])
        bg = m["bg_pixel"]
        assert bg[0] == bg[1] == bg[2] and 0 <= bg[0] <= 40
        assert bg[0] == params["background"]
        seen_bg.append(bg[0])
        assert m["interior"] > 0
        assert np.all(np.abs(m["fill"] - np.array(shapes.COLORS[attrs["color"]])) <= 8)
        side = shapes.SIZES[attrs["size"]] * size
        shape = attrs["shape"]
        for measured in (m["width"], m["height"]):
            assert 0.9 * side - 1 <= measured <= 1.1 * side + 1, (attrs, measured, side)
            assert abs(measured - params["side_px"]) <= 1.0
        fx, fy = shapes.POSITIONS[attrs["position"]]
        assert abs(m["cx"] / size - fx) <= 0.05 + 1 / size
        assert abs(m["cy"] / size - fy) <= 0.05 + 1 / size
        assert abs(m["cx"] - params["center_px"][0]) <= 0.5
        assert abs(m["cy"] - params["center_px"][1]) <= 0.5
        expected_ratio = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[shape]
        assert abs(m["ratio"] - expected_ratio) < 0.06, (shape, m["ratio"])
        if shape == "triangle":  # apex up (widths grow downwards), base width == height
            assert abs(m["slope"] - 1.0) < 0.05, m["slope"]
    assert min(seen_bg) <= 5 and max(seen_bg) >= 35  # the level really spans 0..40


def test_render_is_antialiased_and_rejects_bad_attributes():
    rng = np.random.default_rng(0)
    attrs = {"color": "white", "shape": "circle", "size": "large", "position": "center"}
    image, params = shapes.render(attrs, 32, rng)
    levels = set(np.asarray(image)[..., 0].ravel().tolist())
    assert len(levels) > 5  # edge pixels sit between background and fill
    with pytest.raises(GanError, match="'color' is 'pink'"):
        shapes.render({**attrs, "color": "pink"}, 32, rng)
    with pytest.raises(GanError, match="size"):
        shapes.render(attrs, 8, rng)


def test_attributes_are_uniform_and_ordered():
    assert shapes.ATTRIBUTES["color"] == ["red", "orange", "yellow", "green", "cyan", "blue",
                                          "purple", "white"]
    assert shapes.ATTRIBUTES["position"] == ["top left", "top right", "bottom left",
                                             "bottom right", "center"]
    rng = np.random.default_rng(1)
    draws = [shapes.sample_attributes(rng) for _ in range(4000)]
    for key, values in shapes.ATTRIBUTES.items():
        counts = np.array([sum(d[key] == v for d in draws) for v in values])
        assert np.all(np.abs(counts / 4000 - 1 / len(values)) < 0.04), (key, counts)


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    out = []
    for p in parts:
        if p.startswith("{"):
            out.append(r"(.+?)")
        else:
            literal = re.escape(p)
            out.append(re.sub(r"(^|(?<= ))a\\? $", r"\1an? ", literal))  # "a " may become "an "
    return re.compile("^" + "".join(out) + "$")


def _uses(text: str, wording: str) -> tuple[bool, bool]:
    """(matches a template of `wording`, contains a synonym phrase of `wording`)."""
    templates, phrases = shapes.caption_words(wording)
    norm = " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())
    template_hit = any(_template_regex(t).match(text) for t in templates)
    phrase_hit = any(re.search(r"\b" + re.escape(p) + r"\b", norm) for p in phrases)
    return template_hit, phrase_hit


def test_captions_round_trip_and_keep_heldout_wordings_out_of_seen():
    rng = np.random.default_rng(7)
    heldout_by_template = heldout_by_word = 0
    for _ in range(3000):
        attrs = shapes.sample_attributes(rng)
        seen = shapes.make_caption(attrs, rng, "seen")
        held = shapes.make_caption(attrs, rng, "heldout")
        assert shapes.parse_caption(seen) == attrs, seen
        assert shapes.parse_caption(held) == attrs, held
        seen_template, _ = _uses(seen, "seen")
        held_template, held_word = _uses(seen, "heldout")
        assert seen_template and not held_template and not held_word, seen
        held_template, held_word = _uses(held, "heldout")
        assert held_template or held_word, held
        heldout_by_template += held_template
        heldout_by_word += held_word
        assert not re.search(r"\ba [aeiou]", held + " " + seen)  # "an orange", not "a orange"
    assert heldout_by_template > 1000 and heldout_by_word > 1000  # both kinds are common


def test_parse_caption_handles_case_punctuation_and_rejects_ambiguity():
    assert shapes.parse_caption("A BIG Red disc, in the Upper-Left!") == {
        "color": "red", "shape": "circle", "size": "large", "position": "top left"}
    assert shapes.parse_caption("a big red circle") is None  # no position
    assert shapes.parse_caption("a big red blue circle in the center") is None  # two colors
    assert shapes.parse_caption("") is None
    assert shapes.parse_caption(None) is None
    with pytest.raises(GanError, match="wording"):
        shapes.make_caption(shapes.sample_attributes(np.random.default_rng(0)),
                            np.random.default_rng(0), "novel")


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_write_shapes_layout_files_and_metadata(tmp_path):
    out = tmp_path / "shapes"
    shapes.write_shapes(out, n_train=20, n_test=10, size=32, seed=0, progress=False)
    info = json.loads((out / "info.json").read_text())
    assert info["counts"] == {"train": 20, "test": 10} and info["seed"] == 0 and info["size"] == 32
    assert info["generator"] == "gan.data.shapes"
    for split, n in (("train", 20), ("test", 10)):
        rows = read_metadata(out / split)
        assert len(rows) == n
        for row in rows:
            assert shapes.parse_caption(row["text"]) == row["attributes"]
            with Image.open(out / split / row["file_name"]) as im:
                assert im.size == (32, 32) and im.mode == "RGB"
            wav = sf.info(str(out / split / row["audio_file"]))
            got = (wav.samplerate, wav.channels, wav.frames, wav.subtype)
            assert got == (16000, 1, 16000, "PCM_16")
    train = read_metadata(out / "train")
    test = read_metadata(out / "test")
    assert {r["wording"] for r in train} == {"seen"}
    assert sum(r["wording"] == "heldout" for r in test) == 5
    assert sum(r["wording"] == "seen" for r in test) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_write_shapes_is_deterministic_and_seeded(tmp_path):
    shapes.write_shapes(tmp_path / "a", 12, 6, seed=3, progress=False)
    shapes.write_shapes(tmp_path / "b", 12, 6, seed=3, progress=False)
    shapes.write_shapes(tmp_path / "c", 12, 6, seed=4, progress=False)
    shapes.write_shapes(tmp_path / "d", 5, 6, seed=3, progress=False)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a["train/metadata.jsonl"] != c["train/metadata.jsonl"]
    assert a["train/images/000000.png"] != c["train/images/000000.png"]
    d = _tree(tmp_path / "d")
    # Test samples come from their own seed stream: n_train does not change them.
    assert d["test/metadata.jsonl"] == a["test/metadata.jsonl"]
    assert d["train/images/000004.png"] == a["train/images/000004.png"]


def test_write_shapes_refuses_non_empty_out_and_cleans_up_on_interrupt(tmp_path, monkeypatch):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(GanError, match="taken.*not empty"):
        shapes.write_shapes(out, 4, 2, progress=False)
    assert (out / "keep.txt").read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    shapes.write_shapes(empty, 3, 1, progress=False)  # an empty folder is fine
    assert (empty / "info.json").is_file()
    with pytest.raises(GanError, match="n_train"):
        shapes.write_shapes(tmp_path / "zero", 0, 1, progress=False)

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return np.zeros(16000, np.float32)

    monkeypatch.setattr(shapes, "sonify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shapes.write_shapes(tmp_path / "half", 10, 2, progress=False)
    assert not (tmp_path / "half").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]
