import pytest
import torch

from gan.augment import diff_augment


def images(B=16, H=16, W=16, seed=0):
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        diff_augment(images(), "color,rotate")
    msg = str(err.value)
    assert "rotate" in msg and "color" in msg and "translation" in msg and "cutout" in msg


def test_empty_policy_is_identity():
    x = images()
    assert torch.equal(diff_augment(x, ""), x)


def test_reproducible_given_a_generator():
    x = images()
    a = diff_augment(x, generator=gen(1))
    assert torch.equal(a, diff_augment(x, generator=gen(1)))
    assert not torch.equal(a, diff_augment(x, generator=gen(2)))
    assert a.shape == x.shape


def test_differentiable():
    x = images().requires_grad_()
    out = diff_augment(x, generator=gen(0))
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_is_a_zero_padded_shift_of_at_most_an_eighth():
    B, H = 16, 16
    x = images(B, H, H) + 2.0  # strictly positive, so padding zeros are recognisable
    out = diff_augment(x, "translation", gen(3))
    s = H // 8
    shifts = []
    for b in range(B):
        found = None
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                ref = torch.zeros_like(x[b])
                ys, yd = slice(max(0, -dy), H - max(0, dy)), slice(max(0, dy), H - max(0, -dy))
                xs, xd = slice(max(0, -dx), H - max(0, dx)), slice(max(0, dx), H - max(0, -dx))
                ref[:, yd, xd] = x[b][:, ys, xs]
                if torch.equal(out[b], ref):
                    found = (dy, dx)
        assert found is not None, f"sample {b} is not a shift of at most {s} pixels"
        shifts.append(found)
    assert len(set(shifts)) > 3  # per-sample shifts, not one for the whole batch


def test_cutout_zeros_one_rectangle_of_at_most_half_the_side():
    B, H, W = 32, 16, 12
    x = torch.ones(B, 3, H, W)
    out = diff_augment(x, "cutout", gen(4))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    full = 0
    for b in range(B):
        hole = out[b, 0] == 0
        assert torch.equal(hole, (out[b] == 0).all(dim=0))  # same hole in every channel
        rows, cols = hole.any(dim=1), hole.any(dim=0)
        assert 0 < rows.sum() <= H // 2 and 0 < cols.sum() <= W // 2
        assert hole.sum() == rows.sum() * cols.sum()  # a solid rectangle
        r_idx, c_idx = rows.nonzero().flatten(), cols.nonzero().flatten()
        assert r_idx[-1] - r_idx[0] + 1 == rows.sum() and c_idx[-1] - c_idx[0] + 1 == cols.sum()  # contiguous
        full += int(hole.sum() == (H // 2) * (W // 2))
    assert full > 0  # some holes lie fully inside the image


def test_color_on_grey_images_is_a_brightness_shift():
    # Saturation and contrast act around the mean, which a constant grey image equals.
    x = torch.full((16, 3, 8, 8), 0.2)
    out = diff_augment(x, "color", gen(5))
    delta = out - x
    per_sample = delta.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-6)
    assert per_sample[:, 0].abs().max() <= 0.5
    assert per_sample[:, 0].std() > 0.05


def test_color_changes_saturation_of_colourful_images():
    x = images(16, 8, 8)
    out = diff_augment(x, "color", gen(6))
    spread_in = (x - x.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))
    spread_out = (out - out.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))
    ratio = spread_out / spread_in
    assert ratio.min() < 0.7 and ratio.max() > 1.3  # both desaturated and oversaturated samples


def test_channels_last_and_bf16_inputs():
    x = images().contiguous(memory_format=torch.channels_last)
    ref = diff_augment(x.contiguous(), generator=gen(7))
    assert torch.allclose(diff_augment(x, generator=gen(7)), ref, atol=1e-6)
    out = diff_augment(x.bfloat16(), generator=gen(7))
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=0.1)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="B, C, H, W"):
        diff_augment(torch.randn(3, 16, 16))


def test_per_group_transforms_are_shared_within_each_group():
    x = images(B=2).repeat_interleave(3, dim=0)  # rows 0-2 one image, rows 3-5 another
    out = diff_augment(x, generator=gen(4), group=3)
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2]) and torch.equal(out[3], out[5])
    apart = diff_augment(x, generator=gen(4))  # one transform per row: the copies come out different
    assert not (torch.equal(apart[0], apart[1]) and torch.equal(apart[1], apart[2]))
    # group 1 draws exactly what the per-row policy always drew (resumed runs replay the same stream)
    assert torch.equal(diff_augment(x, generator=gen(4), group=1), apart)
    with pytest.raises(ValueError, match="group must be >= 1 and divide the batch 6, got 4"):
        diff_augment(x, generator=gen(0), group=4)
