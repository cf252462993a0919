"""Damage masks: kinds, documented coverage, determinism, applying them, mask files."""

import numpy as np
import pytest
import torch
from PIL import Image

from gan.data import damage
from gan.data.damage import COVERAGE, KINDS, make_mask
from gan.errors import GanError

T = 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [16, 32, (24, 40)])
def test_every_kind_has_shape_dtype_and_documented_coverage(kind, size):
    h, w = (size, size) if isinstance(size, int) else size
    low, high = COVERAGE[kind]
    for seed in range(8):
        mask = make_mask(kind, T, size, seed=seed)
        assert mask.shape == (T, h, w) and mask.dtype == torch.bool
        cov = damage.frame_coverage(mask)  # (T,)
        dropped = cov == 1.0
        assert not dropped.all()
        if kind == "dropped_frames":
            assert 1 <= dropped.sum() <= 2 and torch.all(cov[~dropped] == 0)
            continue
        if kind != "mixed":
            assert not dropped.any()
        rest = cov[~dropped]
        assert torch.all((rest >= low) & (rest <= high)), (kind, size, seed, cov)


@pytest.mark.parametrize("kind", KINDS)
def test_masks_are_deterministic_by_seed(kind):
    a = make_mask(kind, T, 16, seed=3)
    assert torch.equal(a, make_mask(kind, T, 16, seed=3))
    assert any(not torch.equal(a, make_mask(kind, T, 16, seed=s)) for s in (4, 5, 6))
    rng1, rng2 = np.random.default_rng(9), np.random.default_rng(9)
    assert torch.equal(make_mask(kind, T, 16, rng=rng1), make_mask(kind, T, 16, rng=rng2))


def test_each_kind_behaves_over_time():
    strokes = make_mask("strokes", T, 32, seed=0)
    assert all(torch.equal(strokes[0], f) for f in strokes)  # static
    moving = make_mask("moving_strokes", T, 32, seed=0)
    assert not torch.equal(moving[0], moving[-1])
    boxes = make_mask("boxes", 6, 32, seed=0)
    corners = []
    for f in boxes:
        ys, xs = torch.nonzero(f, as_tuple=True)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        assert f[y0:y1 + 1, x0:x1 + 1].all() and f.sum() == (y1 - y0 + 1) * (x1 - x0 + 1)
        corners.append((int(x0), int(y0)))
    assert len(set(corners)) > 1  # the rectangle moves ...
    steps = np.abs(np.diff(np.array(corners), axis=0))
    assert steps.max() <= 4  # ... smoothly (at most ~3 px/frame at 32 px)
    scratches = make_mask("scratches", T, 32, seed=0)
    assert not torch.equal(scratches[0], scratches[1])  # new every frame
    for seed in range(10):  # two frames: exactly one is dropped, never both
        dropped = make_mask("dropped_frames", 2, 16, seed=seed).flatten(1).all(1)
        assert dropped.sum() == 1
    with pytest.raises(GanError, match="at least 2 frames"):
        make_mask("dropped_frames", 1, 16, seed=0)
    assert make_mask("mixed", 1, 16, seed=0).shape == (1, 16, 16)  # mixes without dropping


def test_make_mask_rejects_bad_arguments():
    with pytest.raises(GanError, match="one of"):
        make_mask("holes", T, 16, seed=0)
    with pytest.raises(GanError, match="size"):
        make_mask("boxes", T, 4, seed=0)
    with pytest.raises(GanError, match="frames"):
        make_mask("boxes", 0, 16, seed=0)
    with pytest.raises(GanError, match="either seed or rng"):
        make_mask("boxes", T, 16, seed=0, rng=np.random.default_rng(0))


def test_apply_damage_and_coverage():
    frames = torch.rand(T, 3, 8, 8) * 2 - 1  # (T, 3, H, W)
    mask = torch.zeros(T, 8, 8, dtype=torch.bool)
    mask[1, 2:4, 2:6] = True
    out = damage.apply_damage(frames, mask)
    assert torch.all(out[1, :, 2:4, 2:6] == 0)
    keep = ~mask.unsqueeze(1).expand_as(frames)
    assert torch.equal(out[keep], frames[keep])
    assert damage.coverage(mask) == pytest.approx(8 / (T * 64))
    assert damage.frame_coverage(mask).tolist() == [0, 0.125, 0, 0]
    batched = damage.apply_damage(frames[None].repeat(2, 1, 1, 1, 1), mask[None].repeat(2, 1, 1, 1))
    assert torch.equal(batched[1], out)
    with pytest.raises(GanError, match="apply_damage"):
        damage.apply_damage(frames, mask[:, :4])
    with pytest.raises(GanError, match="bool"):
        damage.apply_damage(frames, mask.float())


def test_mask_png_round_trip_and_errors(tmp_path):
    mask = make_mask("mixed", T, 16, seed=1)
    names = [f"{t:05d}.jpg" for t in range(T)]
    damage.save_masks(mask, tmp_path / "m", names)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [f"{t:05d}.png" for t in range(T)]
    assert torch.equal(damage.load_masks(tmp_path / "m", names, 16), mask)
    assert torch.equal(damage.load_masks(tmp_path / "m", names), mask)

    with pytest.raises(GanError, match="3 names for 4 mask frames"):
        damage.save_masks(mask, tmp_path / "x", names[:3])
    with pytest.raises(GanError, match="mask folder not found"):
        damage.load_masks(tmp_path / "nowhere", names)
    with pytest.raises(GanError, match=r"1 of 5 mask file\(s\) missing.*00004.png"):
        damage.load_masks(tmp_path / "m", names + ["00004.jpg"])
    with pytest.raises(GanError, match="5 mask files for 4 frames.*extra.png"):
        Image.new("L", (16, 16)).save(tmp_path / "m" / "extra.png")
        damage.load_masks(tmp_path / "m", names)
    (tmp_path / "m" / "extra.png").unlink()
    with pytest.raises(GanError, match=r"00000.png is 16x16 \(WxH\), expected 20x12"):
        damage.load_masks(tmp_path / "m", names, (12, 20))
    Image.new("L", (8, 16)).save(tmp_path / "m" / "00002.png")
    with pytest.raises(GanError, match="00002.png is 8x16"):
        damage.load_masks(tmp_path / "m", names)
    damage.save_masks(mask, tmp_path / "m", names)  # repair 00002.png
    (tmp_path / "m" / "00003.png").write_bytes(b"not a png")
    with pytest.raises(GanError, match="cannot read mask .*00003.png"):
        damage.load_masks(tmp_path / "m", names)


def test_palette_masks_count_nonzero_indices(tmp_path):
    """DAVIS annotations are palette PNGs: any nonzero index (object id) counts, not brightness."""
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 0, 0, 0, 200, 0, 0] + [0] * 759)  # index 1 is black too
    pal.putpixel((1, 1), 1)
    pal.putpixel((2, 3), 2)
    pal.save(tmp_path / "0.png")
    got = damage.load_masks(tmp_path, ["0.jpg"], 4)[0]
    assert got.sum() == 2 and got[1, 1] and got[3, 2]


def test_fixed_eval_masks_cycle_kinds_and_are_stable():
    masks = damage.fixed_eval_masks(7, T, 16)
    assert [k for k, _ in masks] == list(KINDS) + [KINDS[0]]
    again = damage.fixed_eval_masks(3, T, 16)
    assert all(torch.equal(a[1], b[1]) and a[0] == b[0] for a, b in zip(masks, again))
    other = damage.fixed_eval_masks(3, T, 16, seed=1)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(masks, other))
