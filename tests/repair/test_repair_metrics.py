"""Repair metrics against closed forms: PSNR of a known MSE, the 100 dB cap, hole-only scores,
SSIM against torchmetrics, and the temporal error of offsets and single changed frames."""

import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from gan.errors import GanError
from gan.repair.metrics import PSNR_CAP, psnr, repair_metrics, ssim, temporal_error


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def frames(t=4, size=16, seed=0, low=-0.8, high=0.8):
    """A float clip (T, 3, H, W) with values in [low, high], float64 so offsets stay exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, size, size, generator=g, dtype=torch.float64) * (high - low) + low


def test_psnr_of_a_constant_offset_is_20db():
    target = frames()
    # 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, PSNR 20 dB
    assert psnr(target + 0.2, target) == pytest.approx(20.0, abs=1e-9)
    a = torch.full((2, 3, 16, 16), 100, dtype=torch.uint8)
    assert psnr(a + 10, a) == pytest.approx(20 * math.log10(255 / 10))


def test_psnr_caps_identical_frames_and_averages_per_frame():
    target = frames()
    assert psnr(target, target) == PSNR_CAP == 100.0
    pred = target.clone()
    pred[1:] += 0.2  # one identical frame (100 dB), three at 20 dB
    assert psnr(pred, target) == pytest.approx((100 + 3 * 20) / 4)


def test_hole_psnr_ignores_valid_pixels():
    target = frames()
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 4:8, 4:8] = True
    pred = torch.where(mask[:, None], target + 0.2, target - 0.7)  # valid pixels very wrong
    assert psnr(pred, target, mask) == pytest.approx(20.0, abs=1e-9)
    assert psnr(pred, target) < 15
    # every mask layout means the same; no hole at all gives NaN
    assert psnr(pred, target, mask[:, None].float()) == pytest.approx(20.0, abs=1e-9)
    assert psnr(pred[None], target[None], mask[None]) == pytest.approx(20.0, abs=1e-9)
    assert math.isnan(psnr(pred, target, torch.zeros_like(mask)))


def test_ssim_identical_is_one_and_matches_torchmetrics():
    target = frames(size=16)
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-9)
    pred = (target + 0.2 * frames(seed=1)).clamp(-1, 1)
    expected = structural_similarity_index_measure((pred + 1) / 2, (target + 1) / 2, data_range=1.0)
    assert ssim(pred, target) == pytest.approx(float(expected), abs=1e-9)
    # uint8 input is scored in the same [0, 1] units
    u8 = lambda x: ((x + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    assert ssim(u8(pred), u8(target)) == pytest.approx(ssim(u8(pred).double() / 127.5 - 1,
                                                            u8(target).double() / 127.5 - 1), abs=1e-9)


def test_hole_ssim_averages_the_map_over_holes():
    target = frames(t=2, size=32)
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[:, :4, :4] = True
    pred = target.clone()
    pred[..., 20:, 20:] = 0.0  # damage farther from the hole than the 11x11 window reaches
    assert ssim(pred, target, mask) == pytest.approx(1.0, abs=1e-12)
    assert ssim(pred, target) < 0.99
    assert ssim(pred, target, torch.ones_like(mask)) == pytest.approx(ssim(pred, target), abs=1e-12)


def test_temporal_error_closed_forms():
    target = frames()
    assert temporal_error(target + 0.2, target) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    t8 = torch.randint(0, 200, (4, 3, 16, 16), dtype=torch.uint8, generator=g)
    p8 = t8.clone()
    p8[1] += 51  # +0.2 in frame 1: steps 0->1 and 1->2 are off by 0.2, step 2->3 by 0
    assert temporal_error(p8, t8) == pytest.approx(0.4 / 3, abs=1e-12)
    assert temporal_error(t8 + 7, t8) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(temporal_error(target[:1], target[:1]))


def test_repair_metrics_bundles_the_above_for_batches():
    target = frames(size=16)
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 2:9, 3:10] = True
    pred = torch.where(mask[:, None], (target + 0.3 * frames(seed=2)).clamp(-1, 1), target)
    m = repair_metrics(pred[None].repeat(2, 1, 1, 1, 1), target[None].repeat(2, 1, 1, 1, 1),
                       mask[None].repeat(2, 1, 1, 1))
    assert set(m) == {"psnr", "ssim", "hole_psnr", "hole_ssim", "temporal"}
    assert m["psnr"] == pytest.approx(psnr(pred, target))
    assert m["ssim"] == pytest.approx(ssim(pred, target))
    assert m["hole_psnr"] == pytest.approx(psnr(pred, target, mask))
    assert m["hole_ssim"] == pytest.approx(ssim(pred, target, mask))
    assert m["temporal"] == pytest.approx(temporal_error(pred, target))
    assert m["hole_psnr"] < m["psnr"] and m["hole_ssim"] < m["ssim"]


def test_metric_errors_name_what_was_expected():
    target = frames()
    with pytest.raises(GanError, match="one shape"):
        psnr(target[:2], target)
    with pytest.raises(GanError, match=r"mask of shape \(4, 16, 16\)"):
        psnr(target, target, torch.zeros(4, 8, 8, dtype=torch.bool))
    with pytest.raises(GanError, match=r"\(T, 3, H, W\)"):
        psnr(target[:, :1], target[:, :1])
    with pytest.raises(GanError, match="at least 11 px"):
        ssim(frames(size=8), frames(size=8))
