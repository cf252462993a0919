import re

import numpy as np
import pytest
import torch
from PIL import Image

from gan.errors import GanError
from gan.metrics.images import IMAGE_SUFFIXES, ImageFolder, list_images, load_images


def rgb(h=8, w=8, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_list_images_is_sorted_recursive_and_skips_hidden(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.webp", ".cache/d.png", "notes.txt"):
        path = tmp_path / name
        rgb().save(path, format="PNG") if name.endswith(("png", "JPG", "webp")) else path.write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.JPG", "b.png", "sub/c.webp"]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(GanError, match=re.escape(f"{tmp_path / 'missing'}: no such folder")):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    expected = f"{tmp_path / 'empty'}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}"
    with pytest.raises(GanError, match=re.escape(expected)):
        load_images(tmp_path / "empty")


def test_modes_are_converted_and_counted(tmp_path):
    base = rgb(seed=1)
    base.save(tmp_path / "0_rgb.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "1_gray.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(0)
    rgba.save(tmp_path / "2_rgba.png")
    base.convert("P").save(tmp_path / "3_palette.png")
    with_transparency = base.convert("P")
    with_transparency.info["transparency"] = 0
    with_transparency.save(tmp_path / "4_palette_t.png", transparency=0)

    folder = ImageFolder(tmp_path)
    gray = folder[1]  # (3, 8, 8)
    assert gray.shape == (3, 8, 8) and gray.dtype == torch.uint8 and folder.converted == {"L": 1}

    x, report = load_images(tmp_path, progress=False)
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.uint8
    assert report == {"folder": str(tmp_path), "count": 5, "converted": {"L": 1, "RGBA": 1, "P": 2}, "size": [8, 8]}
    expected = torch.from_numpy(np.array(base)).permute(2, 0, 1)  # (3, 8, 8)
    assert torch.equal(x[0], expected)
    assert (x[1] == 100).all()  # gray -> equal channels
    assert torch.equal(x[2], expected)  # alpha dropped, colors kept

    x2, report2 = load_images(tmp_path, limit=2, progress=False)
    assert x2.shape == (2, 3, 8, 8) and report2["count"] == 2 and report2["converted"] == {"L": 1}
    with pytest.raises(GanError, match="limit must be a positive"):
        load_images(tmp_path, limit=0)


def test_unreadable_files_are_named_together(tmp_path):
    rgb(32, 32).save(tmp_path / "good.png")
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.png").write_text("I am not a picture")
    with pytest.raises(GanError, match=r"2 unreadable file\(s\)") as e:
        load_images(tmp_path, progress=False)
    assert "truncated.png" in str(e.value) and "text.png" in str(e.value) and "good.png" not in str(e.value)
    with pytest.raises(GanError, match="truncated.png: not a readable image"):
        ImageFolder(tmp_path)[2]  # sorted: good, text, truncated


def test_at_most_ten_bad_files_are_listed(tmp_path):
    for i in range(12):
        (tmp_path / f"bad{i:02d}.png").write_text("x")
    with pytest.raises(GanError, match=r"12 unreadable file\(s\) \(and 2 more\)") as e:
        load_images(tmp_path, progress=False)
    assert "bad09.png" in str(e.value) and "bad10.png" not in str(e.value)


def test_mixed_sizes_are_refused(tmp_path):
    rgb(8, 8).save(tmp_path / "a.png")
    rgb(8, 8).save(tmp_path / "b.png")
    rgb(16, 8).save(tmp_path / "c.png")
    with pytest.raises(GanError, match=r"8x8 \(2 images, e.g. .*a.png\); 16x8 \(1 images, e.g. .*c.png\)"):
        load_images(tmp_path, progress=False)
