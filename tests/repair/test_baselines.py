"""Repair baselines: nearest_visible recovers a static scene under a moving hole, Telea fills a
constant image, valid pixels never change, and hole content is never read."""

import numpy as np
import pytest
import torch

from gan.data.damage import make_mask
from gan.errors import GanError
from gan.repair.baselines import GRAY, nearest_visible, telea

T, S = 4, 16


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_clip(seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, 3, S, S), dtype=torch.uint8, generator=g)


def moving_box() -> torch.Tensor:
    """A 4x4 hole moving 4 px right per frame: every pixel is visible in some frame."""
    mask = torch.zeros(T, S, S, dtype=torch.bool)
    for t in range(T):
        mask[t, 6:10, 4 * t:4 * t + 4] = True
    return mask


def test_nearest_visible_recovers_a_static_scene_under_a_moving_hole():
    scene = random_clip()[:1].repeat(T, 1, 1, 1)
    mask = moving_box()
    damaged = scene.masked_fill(mask[:, None], 0)
    assert torch.equal(nearest_visible(damaged, mask), scene)


def test_nearest_visible_prefers_the_nearest_then_the_earlier_frame():
    clip = torch.stack([torch.full((3, S, S), v, dtype=torch.uint8) for v in (10, 20, 30, 40)])
    mask = torch.zeros(T, S, S, dtype=torch.bool)
    mask[1, 0, 0] = True  # frames 0 and 2 are equally near: the earlier wins
    mask[3] = True  # a dropped frame: copied from frame 2
    out = nearest_visible(clip, mask)
    assert out[1, :, 0, 0].tolist() == [10, 10, 10]
    assert torch.equal(out[3], clip[2])


def test_never_visible_pixels_fall_back_to_telea():
    clip = random_clip()[:1].repeat(T, 1, 1, 1)
    mask = torch.zeros(T, S, S, dtype=torch.bool)
    mask[:, 7:9, 7:9] = True  # the same hole in every frame
    assert torch.equal(nearest_visible(clip, mask), telea(clip, mask))


def test_telea_fills_a_small_hole_in_a_constant_image_with_the_constant():
    clip = torch.full((1, 3, S, S), 77, dtype=torch.uint8)
    mask = torch.zeros(1, S, S, dtype=torch.bool)
    mask[0, 6:9, 6:9] = True
    out = telea(clip, mask)
    # OpenCV's Telea is not exact on flat images (its gradient term rounds): within 3 levels
    assert (out.int() - 77).abs().max() <= 3
    assert telea(clip, torch.ones(1, S, S, dtype=torch.bool)).eq(GRAY).all()  # nothing visible


@pytest.mark.parametrize("fill", [telea, nearest_visible])
def test_valid_pixels_unchanged_and_hole_content_never_read(fill):
    clip = random_clip(1)
    mask = make_mask("moving_strokes", T, S, seed=3)
    out = fill(clip, mask)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    valid = ~mask[:, None].expand_as(clip)
    assert torch.equal(out[valid], clip[valid])
    garbage = torch.where(mask[:, None], random_clip(2), clip)
    assert torch.equal(fill(garbage, mask), out)


def test_baseline_errors_name_what_was_expected():
    clip, mask = random_clip(), moving_box()
    with pytest.raises(GanError, match=r"uint8 frames \(T, 3, H, W\)"):
        telea(clip.float(), mask)
    with pytest.raises(GanError, match=r"bool mask \(T, H, W\)"):
        nearest_visible(clip, mask[:, None])
    with pytest.raises(GanError, match="radius"):
        telea(clip, mask, radius=0)
    assert np.array_equal(telea(clip, torch.zeros_like(mask)).numpy(), clip.numpy())
