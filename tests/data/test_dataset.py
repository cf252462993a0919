"""ImageTextDataset: conversion, cropping, resizing, preloading, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from gan.data.dataset import ImageTextDataset
from gan.data.metadata import write_metadata
from gan.errors import GanError

R = 16


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, R, R) in [-1, 1] back to (R, R, 3) 0..255 for comparisons with pixel values."""
    return ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round()


@pytest.fixture
def split(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    Image.new("RGB", (R, R), (200, 20, 60)).save(d / "rgb.png")
    Image.new("L", (40, 40), 100).save(d / "gray.png")
    rgba = Image.new("RGBA", (R, R), (0, 0, 255, 0))  # transparent ...
    rgba.paste((255, 0, 0, 255), (0, 0, R, R // 2))  # ... except an opaque red top half
    rgba.save(d / "rgba.png")
    palette = Image.new("P", (R, R), 1)  # every pixel is palette entry 1
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 3 * 254)
    palette.save(d / "palette.png")
    wide = np.zeros((30, 90, 3), np.uint8)  # blue | green | red thirds; the crop keeps green
    wide[:, :30] = (0, 0, 255)
    wide[:, 30:60] = (0, 255, 0)
    wide[:, 60:] = (255, 0, 0)
    Image.fromarray(wide).save(d / "wide.png")
    Image.fromarray((np.arange(R * R).reshape(R, R) * 250).astype(np.uint16)).save(d / "deep.png")
    names = ["rgb", "gray", "rgba", "palette", "wide", "deep"]
    write_metadata(d, [{"file_name": f"{n}.png", "text": f"a {n} picture"} for n in names])
    return d


def test_items_have_the_right_shape_range_and_index(split):
    ds = ImageTextDataset(split, R)
    assert len(ds) == 6 and ds.texts[0] == "a rgb picture" and ds.rows[4]["file_name"] == "wide.png"
    for i in range(len(ds)):
        item = ds[i]
        assert item["index"] == i
        x = item["image"]
        assert x.shape == (3, R, R) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
    assert np.allclose(to_uint8(ds[0]["image"]), (200, 20, 60))
    assert ds[-1]["index"] == 5
    with pytest.raises(IndexError):
        ds[6]


def test_modes_are_converted_to_rgb(split):
    ds = ImageTextDataset(split, R)
    gray = to_uint8(ds[1]["image"])  # 40x40 resized to 16x16, still uniform
    assert np.allclose(gray, 100, atol=1)
    rgba = to_uint8(ds[2]["image"])
    assert np.allclose(rgba[: R // 2], (255, 0, 0))  # opaque part keeps its colour
    assert np.allclose(rgba[R // 2:], (255, 255, 255))  # transparent part is white, not blue
    assert np.allclose(to_uint8(ds[3]["image"]), (10, 200, 10))
    deep = to_uint8(ds[5]["image"])[..., 0]  # 16-bit values scaled into 0..255, not clipped
    assert deep.max() > 200 and deep.min() < 5 and len(np.unique(deep)) > 100


def test_non_square_is_center_cropped_then_resized(split):
    wide = to_uint8(ImageTextDataset(split, R)[4]["image"])
    assert np.allclose(wide, (0, 255, 0), atol=2)  # only the middle third survives the crop
    big = to_uint8(ImageTextDataset(split, 64)[4]["image"])  # upscaling works too
    assert big.shape == (64, 64, 3) and np.allclose(big[4:-4, 4:-4], (0, 255, 0), atol=2)


def test_preload_and_lazy_give_identical_tensors(split):
    eager = ImageTextDataset(split, R, preload=True)
    lazy = ImageTextDataset(split, R, preload=False)
    auto = ImageTextDataset(split, R)
    assert eager.preloaded and not lazy.preloaded and auto.preloaded  # tiny: auto preloads
    assert eager.images.dtype == torch.uint8 and eager.images.shape == (6, 3, R, R)
    for i in range(len(eager)):
        assert torch.equal(eager[i]["image"], lazy[i]["image"])


def test_rows_sharing_an_image_decode_it_once(tmp_path):
    Image.new("RGB", (R, R), (1, 2, 3)).save(tmp_path / "a.png")
    Image.new("RGB", (R, R), (4, 5, 6)).save(tmp_path / "b.png")
    write_metadata(tmp_path, [{"file_name": "a.png", "text": t} for t in ("one", "two", "three")]
                   + [{"file_name": "b.png", "text": "four"}])
    ds = ImageTextDataset(tmp_path, R)
    assert len(ds) == 4 and ds.images.shape[0] == 2
    assert torch.equal(ds[0]["image"], ds[2]["image"])
    assert np.allclose(to_uint8(ds[3]["image"]), (4, 5, 6))


def test_missing_or_broken_image_names_file_and_line(split):
    (split / "gray.png").unlink()  # line 2
    with pytest.raises(GanError, match=r"metadata.jsonl:2: image file not found: .*gray.png"):
        ImageTextDataset(split, R)
    with pytest.raises(GanError, match=r"metadata.jsonl:2: image file not found: .*gray.png"):
        ImageTextDataset(split, R, preload=False)  # lazy too: a missing file is found at the start
    Image.new("L", (40, 40), 100).save(split / "gray.png")
    lazy = ImageTextDataset(split, R, preload=False)  # lazy: a corrupt file fails when it is read
    assert lazy[0]["image"].shape == (3, R, R)
    (split / "wide.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # line 5
    with pytest.raises(GanError, match=r"metadata.jsonl:5: cannot read image .*wide.png"):
        lazy[4]


def test_bad_resolution_is_a_user_error(split):
    with pytest.raises(GanError, match="resolution"):
        ImageTextDataset(split, 0)
