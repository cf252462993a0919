"""Repair models and losses: gated convs, the generator's composite and hole handling, FiLM,
save/load, the T-PatchGAN discriminator, a tiny overfit, and loss values in closed form."""

import pytest
import torch
from torch.nn.utils import parametrize

from gan.errors import GanError
from gan.repair import losses
from gan.repair.losses import (VGG16_FILE, VGG16_URL, VGGPerceptual, _vgg16_features, hole_l1,
                               patch_hinge_d, patch_hinge_g, repair_reconstruction, valid_l1)
from gan.repair.models import GatedConv3d, RepairGenerator, TemporalPatchDiscriminator

C = 4  # base channels: tiny on purpose (busy 2-core CPU)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def clip(b=1, t=4, h=16, w=16, seed=0):
    """(frames (B, T, 3, H, W) in [-1, 1] with holes zeroed, mask (B, T, 1, H, W) float, clean frames)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(b, t, 3, h, w, generator=g) * 2 - 1
    mask = (torch.rand(b, t, 1, h, w, generator=g) < 0.3).float()
    return clean * (1 - mask), mask, clean


# --- GatedConv3d ---------------------------------------------------------------------------

@pytest.mark.parametrize("stride,dilation,out_hw", [(1, 1, 16), (2, 1, 8), (1, 4, 16)])
def test_gated_conv_shapes_keep_time(stride, dilation, out_hw):
    conv = GatedConv3d(4, 6, kernel_size=(3, 5, 5), stride=stride, dilation=dilation)
    assert conv(torch.randn(2, 4, 3, 16, 16)).shape == (2, 6, 3, out_hw, out_hw)


def test_gate_closed_gives_zero_and_open_gives_features():
    conv = GatedConv3d(3, 5)
    x = torch.randn(1, 3, 2, 8, 8)
    with torch.no_grad():
        conv.gate.weight.zero_()
        conv.gate.bias.fill_(-1e4)  # sigmoid -> 0
        assert torch.equal(conv(x), torch.zeros(1, 5, 2, 8, 8))
        conv.gate.bias.fill_(1e4)  # sigmoid -> 1
        torch.testing.assert_close(conv(x), torch.nn.functional.leaky_relu(conv.feature(x), 0.2))


def test_gated_conv_rejects_even_kernel():
    with pytest.raises(GanError, match="odd"):
        GatedConv3d(3, 4, kernel_size=(2, 3, 3))


# --- RepairGenerator -----------------------------------------------------------------------

@pytest.mark.parametrize("t,h,w", [(1, 16, 16), (4, 16, 16), (4, 32, 32), (1, 16, 32)])
def test_generator_shapes(t, h, w):
    g = RepairGenerator(base_channels=C)
    frames, mask, _ = clip(2, t, h, w)
    out, raw = g(frames, mask, return_raw=True)
    assert out.shape == raw.shape == (2, t, 3, h, w)
    assert raw.abs().max() <= 1


def test_composite_keeps_known_pixels_exactly_and_uses_raw_in_holes():
    g = RepairGenerator(base_channels=C)
    frames, mask, _ = clip()
    out, raw = g(frames, mask, return_raw=True)
    known = mask.expand_as(frames) == 0
    assert torch.equal(out[known], frames[known])
    assert torch.equal(out[~known], raw[~known])
    assert torch.equal(g(frames, mask.bool()), out)  # bool masks work the same


def test_hole_garbage_does_not_change_the_output():
    g = RepairGenerator(base_channels=C)
    frames, mask, _ = clip()
    garbage = torch.where(mask.bool(), torch.randn_like(frames) * 50, frames)
    garbage[0, 0, 0][mask[0, 0, 0].bool()] = float("nan")
    with torch.no_grad():
        assert torch.equal(g(garbage, mask), g(frames, mask))


def test_film_condition_changes_the_output():
    g = RepairGenerator(base_channels=C, cond_dim=6)
    frames, mask, _ = clip()
    with torch.no_grad():
        a = g(frames, mask, torch.zeros(1, 6))
        b = g(frames, mask, torch.randn(1, 6) * 3)
    hole = mask.expand_as(frames).bool()
    assert not torch.allclose(a[hole], b[hole])
    assert torch.equal(a[~hole], b[~hole])
    with pytest.raises(GanError, match=r"condition of shape \(1, 6\)"):
        g(frames, mask)
    with pytest.raises(GanError, match="cond_dim=None"):
        RepairGenerator(base_channels=C)(frames, mask, torch.zeros(1, 6))


def test_generator_input_errors_name_what_was_expected():
    g = RepairGenerator(base_channels=C)
    frames, mask, _ = clip(h=16, w=16)
    with pytest.raises(GanError, match="divisible by 4"):
        g(torch.zeros(1, 2, 3, 18, 16), torch.zeros(1, 2, 1, 18, 16))
    with pytest.raises(GanError, match=r"mask of shape \(B, T, 1, H, W\)"):
        g(frames, mask[:, :, 0])
    with pytest.raises(GanError, match="only 0 and 1"):
        g(frames, mask * 0.5)
    with pytest.raises(GanError, match=r"\(B, T, 3, H, W\)"):
        g(frames[0], mask[0])


def test_save_load_round_trip(tmp_path):
    g = RepairGenerator(base_channels=C, dilations=(2, 4), cond_dim=5).eval()
    g.save_pretrained(tmp_path / "g")
    g2 = RepairGenerator.from_pretrained(tmp_path / "g").eval()
    assert g2.config.cond_dim == 5 and tuple(g2.config.dilations) == (2, 4)
    frames, mask, _ = clip()
    cond = torch.randn(1, 5)
    with torch.no_grad():
        assert torch.equal(g(frames, mask, cond), g2(frames, mask, cond))


# --- TemporalPatchDiscriminator ------------------------------------------------------------

@pytest.mark.parametrize("size,layers,patches", [(16, 4, 2), (32, 4, 4), (16, 6, 2), (16, 2, 8)])
def test_discriminator_patch_logits(size, layers, patches):
    d = TemporalPatchDiscriminator(base_channels=C, layers=layers)
    frames, mask, _ = clip(2, 3, size, size)
    assert d(frames, mask).shape == (2, 3, patches, patches)


def test_discriminator_is_spectrally_normalised_and_checks_the_mask():
    d = TemporalPatchDiscriminator(base_channels=C)
    assert len(d.convs) == 4
    assert all(parametrize.is_parametrized(conv, "weight") for conv in d.convs)
    frames, mask, _ = clip()
    with pytest.raises(GanError, match="use_mask=True"):
        d(frames)
    rgb_only = TemporalPatchDiscriminator(base_channels=C, use_mask=False)
    assert rgb_only(frames).shape == (1, 4, 2, 2)
    with pytest.raises(GanError, match="use_mask=False"):
        rgb_only(frames, mask)


def test_overfit_one_clip_lowers_hole_l1():
    torch.manual_seed(0)
    g = RepairGenerator(base_channels=C, dilations=(2,))
    gen = torch.Generator().manual_seed(1)
    # Smooth content (bilinear from 4x4): learnable in 30 steps, unlike per-pixel noise.
    low = torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1
    clean = torch.nn.functional.interpolate(low, size=16, mode="bilinear", align_corners=False)[None]
    mask = (torch.rand(1, 4, 1, 16, 16, generator=gen) < 0.3).float()  # (1, T, 1, H, W)
    frames = clean * (1 - mask)
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(hole_l1(g(frames, mask, return_raw=True)[1], clean, mask))
    for _ in range(30):
        _, raw = g(frames, mask, return_raw=True)
        loss = repair_reconstruction(raw, clean, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(hole_l1(g(frames, mask, return_raw=True)[1], clean, mask))
    assert after < 0.6 * before, (before, after)  # ~0.47 at the time of writing


# --- losses --------------------------------------------------------------------------------

def test_masked_l1_closed_form():
    target = torch.zeros(1, 2, 3, 2, 2)
    mask = torch.zeros(1, 2, 1, 2, 2)
    mask[0, 0, 0, 0, 0] = 1  # one hole pixel out of 8
    pred = torch.full_like(target, 0.5)
    pred[0, 0, :, 0, 0] = 2.0
    assert float(hole_l1(pred, target, mask)) == pytest.approx(2.0)
    assert float(valid_l1(pred, target, mask)) == pytest.approx(0.5)
    assert float(repair_reconstruction(pred, target, mask, hole_weight=2, valid_weight=3)) == pytest.approx(5.5)
    assert float(hole_l1(pred, target, mask.bool())) == pytest.approx(2.0)
    assert float(hole_l1(pred, target, mask.expand_as(pred))) == pytest.approx(2.0)
    pred[0, 0, 1:, 0, 0] = 0.0  # error in one channel of three: normalised by area x channels
    assert float(hole_l1(pred, target, mask)) == pytest.approx(2.0 / 3)


def test_masked_l1_without_holes_or_without_valid_pixels_is_zero():
    pred = torch.randn(1, 2, 3, 4, 4, requires_grad=True)
    target = torch.zeros(1, 2, 3, 4, 4)
    none, every = torch.zeros(1, 2, 1, 4, 4), torch.ones(1, 2, 1, 4, 4)
    loss = hole_l1(pred, target, none) + valid_l1(pred, target, every)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    with pytest.raises(GanError, match=r"mask of shape \(1, 2, 1, 4, 4\)"):
        hole_l1(pred, target, none[0])


def test_temporal_l1_matches_the_metric_and_ignores_constant_offsets():
    from gan.repair.losses import temporal_l1
    from gan.repair.metrics import temporal_error

    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 4, 3, 8, 8, generator=gen) * 2 - 1
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(-1, 1)
    # The metric works in [0, 1] units (half of [-1, 1]) and in float64.
    assert float(temporal_l1(pred, target)) / 2 == pytest.approx(temporal_error(pred, target), rel=1e-5)
    assert float(temporal_l1(target * 0.5 + 0.2, target * 0.5)) == pytest.approx(0.0, abs=1e-6)
    flicker = target.clone()
    flicker[:, 1] += 0.3  # one frame off by 0.3: two of the three differences change by 0.3
    assert float(temporal_l1(flicker, target)) == pytest.approx(0.3 * 2 / 3, rel=1e-5)
    assert float(temporal_l1(pred[:, :1], target[:, :1])) == 0.0
    with pytest.raises(GanError, match="temporal_l1: expected two clips"):
        temporal_l1(pred[0], target[0])


def test_patch_hinge_closed_form():
    real = torch.tensor([[2.0, 0.0]])
    fake = torch.tensor([[-2.0, 0.5]])
    assert float(patch_hinge_d(real, fake)) == pytest.approx(0.5 + 0.75)
    assert float(patch_hinge_g(fake)) == pytest.approx(0.75)


def test_vgg_perceptual_missing_file_names_the_download(tmp_path):
    with pytest.raises(GanError) as e:
        VGGPerceptual(tmp_path / "nope.pth")
    assert VGG16_FILE in str(e.value) and VGG16_URL in str(e.value)
    assert VGG16_URL == "https://download.pytorch.org/models/vgg16-397923af.pth"


def test_vgg_perceptual_from_a_local_random_weights_file(tmp_path):
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in _vgg16_features(losses.VGG_LAYERS["relu2_2"]).state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(3)  # a full torchvision file has more: ignored
    torch.save(state, tmp_path / "vgg.pth")
    vgg = VGGPerceptual(tmp_path / "vgg.pth", layers=("relu1_2", "relu2_2"))
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    target = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    pred = (target + 0.3 * torch.randn_like(target)).requires_grad_()
    assert float(vgg(target, target)) == 0.0
    loss = vgg(pred, target)
    assert float(loss.detach()) > 0
    loss.backward()
    assert pred.grad.abs().sum() > 0
    bad = dict(state)
    bad["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(GanError, match="wrong shapes"):
        VGGPerceptual(tmp_path / "bad.pth", layers=("relu1_2",))
    with pytest.raises(GanError, match="layers"):
        VGGPerceptual(tmp_path / "vgg.pth", layers=("conv9",))


def test_propagation_prior_matches_the_nearest_visible_baseline():
    from gan.repair.baselines import nearest_visible
    from gan.repair.models import propagate_visible

    gen = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (2, 6, 3, 8, 8), generator=gen, dtype=torch.uint8)
    hole = torch.rand(2, 6, 1, 8, 8, generator=gen) < 0.5
    hole[0, :, :, 0, 0] = True  # one pixel hidden in every frame: no source, so not found
    known = (frames.float() / 127.5 - 1).masked_fill(hole, 0.0)
    fill, found = propagate_visible(known, hole)
    assert not found[0, :, :, 0, 0].any() and torch.equal(found, hole & ~hole.all(1, keepdim=True))
    for b in range(2):  # where a source exists, the same pixel the baseline copies (ties: earlier frame)
        want = nearest_visible(frames[b], hole[b, :, 0]).float() / 127.5 - 1  # (T, 3, H, W)
        sel = found[b].expand(-1, 3, -1, -1)
        assert torch.allclose(fill[b][sel], want[sel], atol=1e-6)
        assert (fill[b][~sel] == 0).all()


def test_a_propagating_generator_reads_the_copied_pixels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    g = RepairGenerator(base_channels=4, dilations=(2,), propagate=True).eval()
    assert g.enc1.feature.in_channels == 8 and RepairGenerator(base_channels=4).enc1.feature.in_channels == 4
    frames, mask, _ = clip(t=4)
    with torch.no_grad():  # blind the encoder to the frames and mask: only the propagated fill is left
        for conv in (g.enc1.feature, g.enc1.gate):
            conv.weight[:, :4] = 0
    hole = mask.bool().expand_as(frames)
    other = frames.clone()
    other[~hole] = -other[~hole]  # change the known pixels: the fill copied from them changes
    assert not torch.allclose(g(other, mask)[hole], g(frames, mask)[hole])
    with torch.no_grad():
        for conv in (g.enc1.feature, g.enc1.gate):
            conv.weight[:, 4:] = 0
    assert torch.equal(g(other, mask)[hole], g(frames, mask)[hole])  # nothing else reads them now
    g.save_pretrained(tmp_path / "g")
    g2 = RepairGenerator.from_pretrained(tmp_path / "g").eval()
    assert g2.config.propagate and torch.equal(g2(frames, mask), g(frames, mask))
