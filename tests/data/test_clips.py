"""Clip I/O without codecs: frame folders, GIF/WebP, previews, ClipDataset, the DAVIS reader."""

import json

import pytest
import torch
from PIL import Image

from gan.data import clips
from gan.data.bad_samples import REPORT_FILE, BadSamplePolicy
from gan.data.clips import ClipDataset, read_clip, read_davis, side_by_side, write_frames, write_gif
from gan.data.metadata import check_dataset, read_metadata, write_metadata
from gan.data.moving_shapes import write_moving_shapes
from gan.errors import GanError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _clip(t: int = 4, h: int = 12, w: int = 16) -> torch.Tensor:
    """Distinct frames: frame i has value 40*i + 20 in the red channel, a ramp in green."""
    frames = torch.zeros(t, 3, h, w, dtype=torch.uint8)  # (T, 3, H, W)
    for i in range(t):
        frames[i, 0] = 40 * i + 20
        frames[i, 1] = torch.arange(w, dtype=torch.uint8) * 8
    return frames


def test_frame_folder_natural_sort_and_resize(tmp_path):
    for value, name in ((10, "2.png"), (20, "10.png"), (0, "1.png")):
        Image.new("RGB", (20, 10), (value, 0, 0)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".hidden.png").write_bytes(b"junk")  # e.g. a temp file of an unfinished write
    frames, names = read_clip(tmp_path)
    assert names == ["1.png", "2.png", "10.png"]
    assert frames.shape == (3, 3, 10, 20) and frames.dtype == torch.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 10, 20]
    assert read_clip(tmp_path, size=8)[0].shape == (3, 3, 8, 8)  # centre crop, resize
    assert read_clip(tmp_path, size=(6, 9))[0].shape == (3, 3, 6, 9)  # (H, W), no crop
    Image.new("L", (5, 5), 7).save(tmp_path / "still.jpg")
    single, names = read_clip(tmp_path / "still.jpg")
    assert single.shape == (1, 3, 5, 5) and names == ["00000.png"]


@pytest.mark.parametrize("suffix,tolerance", [(".gif", 12), (".webp", 0)])
def test_gif_and_webp_round_trip(tmp_path, suffix, tolerance):
    frames = _clip()
    write_gif(frames, tmp_path / f"a{suffix}", fps=5)
    back, names = read_clip(tmp_path / f"a{suffix}")
    assert back.shape == frames.shape and len(names) == 4
    # GIF quantises each frame to a palette: compare loosely. Lossless WebP is exact.
    assert (back.int() - frames.int()).abs().float().mean() <= tolerance
    with pytest.raises(GanError, match="must end in .gif or .webp"):
        write_gif(frames, tmp_path / "a.mp4")


def test_read_clip_errors(tmp_path):
    with pytest.raises(GanError, match="clip not found: .*nowhere"):
        read_clip(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanError, match="no frames in .*empty"):
        read_clip(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (8, 8)).save(bad / "0.png")
    (bad / "1.png").write_bytes(b"truncated")
    with pytest.raises(GanError, match="cannot read frame .*1.png"):
        read_clip(bad)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, side in enumerate((8, 8, 6)):
        Image.new("RGB", (side, side)).save(mixed / f"{i}.png")
    with pytest.raises(GanError, match=r"differ in size \(8x8: 0.png, 1.png; 6x6: 2.png\)"):
        read_clip(mixed)
    (tmp_path / "bad.gif").write_bytes(b"GIF89a nonsense")
    with pytest.raises(GanError, match="cannot read clip .*bad.gif"):
        read_clip(tmp_path / "bad.gif")


def test_write_frames_names_atomicity_and_errors(tmp_path, monkeypatch):
    frames = _clip()
    names = [f"{i:05d}.png" for i in range(4)]
    write_frames(frames, tmp_path / "out", names)
    back, got = read_clip(tmp_path / "out")
    assert got == names and torch.equal(back, frames)
    with pytest.raises(GanError, match="need 4 distinct names"):
        write_frames(frames, tmp_path / "x", names[:3])
    with pytest.raises(GanError, match="must be a plain file name"):
        write_frames(frames, tmp_path / "x", ["a/0.png", "1.png", "2.png", "3.png"])
    with pytest.raises(GanError, match="uint8 frames"):
        write_frames(frames.float(), tmp_path / "x", names)

    saved = []
    original = Image.Image.save

    def crash_on_third(self, *args, **kwargs):
        saved.append(1)
        if len(saved) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_frames(frames, tmp_path / "half", names)
    assert list((tmp_path / "half").iterdir()) == []  # no frames, no temp files


def test_side_by_side():
    a, b = _clip(), _clip()
    out = side_by_side(a, b, a)
    assert out.shape == (4, 3, 12, 3 * 16 + 2 * 2)
    assert torch.equal(out[..., :16], a) and torch.all(out[..., 16:18] == 255)
    f = side_by_side(a.float() / 127.5 - 1, b.float() / 127.5 - 1)
    assert f.shape == (4, 3, 12, 34) and torch.all(f[..., 16:18] == 1.0)
    assert torch.equal(clips.to_uint8(f), side_by_side(a, b))
    with pytest.raises(GanError, match="one shape and dtype"):
        side_by_side(a, _clip(t=3))


def test_clip_dataset(tmp_path):
    write_moving_shapes(tmp_path / "ms", 2, 0, frames=3, size=16, seed=0, progress=False)
    split = tmp_path / "ms" / "train"
    for preload in (None, False):
        ds = ClipDataset(split, preload=preload)
        assert len(ds) == 2 and ds.preloaded == (preload is None)
        item = ds[1]
        assert item["index"] == 1 and item["frames"].shape == (3, 3, 16, 16)
        assert item["frames"].dtype == torch.float32
        assert -1 <= item["frames"].min() and item["frames"].max() <= 1
        assert ds[-1]["index"] == 1
    assert ClipDataset(split, size=8)[0]["frames"].shape == (3, 3, 8, 8)
    expected, _ = read_clip(split / "000000")
    assert torch.equal(((ds[0]["frames"] + 1) * 127.5).round().to(torch.uint8), expected)
    (split / "000001" / "00002.png").unlink()
    with pytest.raises(GanError, match="jsonl:2: clip 000001 has 2 frames, metadata says 3"):
        ClipDataset(split)


def _break_clips(split) -> dict[int, str]:
    """Damage rows 2-5 of a 7-clip split in four ways; {metadata line: expected problem}."""
    rows = read_metadata(split)
    (split / "000001" / "00002.png").unlink()  # line 2: a frame short
    (split / "000002" / "00000.png").write_bytes(b"\x89PNG truncated")  # line 3: unreadable frame
    rows[3]["clip"] = "nowhere"  # line 4: no such clip
    rows[4]["frames"] = "three"  # line 5: bad field
    write_metadata(split, rows)
    with open(split / "metadata.jsonl", "ab") as f:
        f.write(b"{not json\n")  # line 8: a bad metadata line
    return {2: "clip 000001 has 2 frames, metadata says 3", 3: "cannot read frame", 4: "clip not found",
            5: "expected \"clip\"", 8: "invalid JSON"}


@pytest.mark.parametrize("preload", [None, False])
def test_clip_dataset_skip_drops_exactly_the_bad_clips(tmp_path, capsys, preload):
    write_moving_shapes(tmp_path / "ms", 7, 0, frames=3, size=16, seed=0, progress=False)
    split = tmp_path / "ms" / "train"
    originals = {n: read_clip(split / f"{n - 1:06d}")[0] for n in (1, 6, 7)}
    expected = _break_clips(split)
    with pytest.raises(GanError) as error:  # error mode (the default) names every bad line
        ClipDataset(split, preload=preload)
    # Lazy error mode lists folders instead of decoding them: the unreadable frame waits its turn.
    found = expected if preload is None else {k: v for k, v in expected.items() if k != 3}
    assert f"{len(found)} of 8 rows of {split / 'metadata.jsonl'} are bad" in str(error.value)
    for line, problem in found.items():
        assert f"metadata.jsonl:{line}: " in str(error.value) and problem in str(error.value)

    run = tmp_path / "run"
    ds = ClipDataset(split, preload=preload, bad_samples=BadSamplePolicy("skip", report_dir=run))
    assert ds.lines == [1, 6, 7] and len(ds) == 3 and ds.preloaded == (preload is None)
    lines = (split / "metadata.jsonl").read_text().splitlines()
    assert ds.texts == [json.loads(lines[n - 1])["text"] for n in (1, 6, 7)]
    for i, line in enumerate(ds.lines):  # item i is its own clip, after the dropped rows
        assert torch.equal(((ds[i]["frames"] + 1) * 127.5).round().to(torch.uint8), originals[line])
    out, report = capsys.readouterr().out, (run / REPORT_FILE).read_text()
    assert f"skipped 5 of 8 rows of {split / 'metadata.jsonl'}" in out and report.startswith("# skipped 5 of 8")
    for line, problem in expected.items():
        named = [x for x in report.splitlines() if f"metadata.jsonl:{line}: " in x]
        assert len(named) == 1 and problem in named[0]
    assert len(ds.skipped) == 5
    checked = check_dataset(split)  # `gan data check` finds the same five lines
    assert {int(x.split(":")[1]) for x in checked} == set(expected)  # line 3 twice: its file_name is frame 0
    for line, problem in expected.items():
        assert any(x.startswith(f"train/metadata.jsonl:{line}: ") and problem in x for x in checked), checked


def test_clip_dataset_skip_with_a_different_sized_clip_and_nothing_left(tmp_path):
    write_moving_shapes(tmp_path / "ms", 3, 0, frames=2, size=16, seed=0, progress=False)
    split = tmp_path / "ms" / "train"
    for name in ("00000.png", "00001.png"):  # clip 2 at 12 px: the first good clip sets the size
        with Image.open(split / "000001" / name) as im:
            im.resize((12, 12)).save(split / "000001" / name)
    ds = ClipDataset(split, bad_samples=BadSamplePolicy("skip", announce=False))
    assert ds.lines == [1, 3] and "clip 000001 is (2, 3, 12, 12), the first good clip is (2, 3, 16, 16)" \
        in ds.skipped[0]
    assert ClipDataset(split, size=16, bad_samples=BadSamplePolicy("skip", announce=False)).lines == [1, 2, 3]
    for n in range(3):
        (split / f"{n:06d}" / "00000.png").write_bytes(b"")
    with pytest.raises(GanError, match="all 3 rows of .*metadata.jsonl are bad; nothing is left"):
        ClipDataset(split, bad_samples=BadSamplePolicy("skip", announce=False))


def _fake_davis(root, video: str, annotated: bool = True):
    frames_dir = root / "JPEGImages" / "480p" / video
    frames_dir.mkdir(parents=True)
    ann_dir = root / "Annotations" / "480p" / video
    for t in range(3):
        Image.new("RGB", (40, 24), (60 * t, 100, 0)).save(frames_dir / f"{t:05d}.jpg")
        if annotated:
            ann_dir.mkdir(parents=True, exist_ok=True)
            ann = Image.new("P", (40, 24), 0)
            ann.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
            ann.paste(1, (10, 4, 30, 20))  # a 20 x 16 object
            ann.save(ann_dir / f"{t:05d}.png")


def test_read_davis_on_a_fake_tree(tmp_path):
    _fake_davis(tmp_path, "bear")
    _fake_davis(tmp_path, "swing", annotated=False)
    assert clips.davis_videos(tmp_path) == ["bear", "swing"]
    video = read_davis(tmp_path, "bear")
    assert video.frames.shape == (3, 3, 24, 40) and video.names == ["00000.jpg", "00001.jpg",
                                                                     "00002.jpg"]
    assert video.masks.shape == (3, 24, 40) and video.masks.dtype == torch.bool
    assert int(video.masks[0].sum()) == 20 * 16 and video.masks[0, 10, 20]
    small = read_davis(tmp_path, "bear", size=(12, 20))  # like E2FGVI's 432x240, scaled down
    assert small.frames.shape == (3, 3, 12, 20) and small.masks.shape == (3, 12, 20)
    assert int(small.masks[0].sum()) == 10 * 8
    assert read_davis(tmp_path, "swing").masks is None
    with pytest.raises(GanError, match="DAVIS video 'cat' not found"):
        read_davis(tmp_path, "cat")
    with pytest.raises(GanError, match="no JPEGImages"):
        clips.davis_videos(tmp_path / "JPEGImages" / "480p")
