"""The image tasks' D and G steps with PacGAN packing (model.pack), against hand-built references."""

from contextlib import nullcontext

import pytest
import torch

from gan import losses
from gan.models.discriminator import ProjectionDiscriminator
from gan.training.steps import Condition, discriminator_step, generator_step, pack_rows


def test_pack_rows_stacks_consecutive_rows_on_channels():
    x = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2)
    p = pack_rows(x, 2)
    assert p.shape == (2, 6, 2, 2)
    assert torch.equal(p[0, :3], x[0]) and torch.equal(p[0, 3:], x[1]) and torch.equal(p[1, 3:], x[3])
    assert pack_rows(x, 1) is x
    with pytest.raises(ValueError, match="batch 4 is not a multiple of the pack size 3"):
        pack_rows(x, 3)


def _setup():
    torch.manual_seed(0)
    D = ProjectionDiscriminator(resolution=16, cond_dim=5, in_channels=6, base_channels=4, max_channels=8)
    real, fake = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    pooled = torch.randn(4, 5)
    pooled[1], pooled[3] = pooled[0], pooled[2]  # rows of a pack share their attributes, so their caption
    return D, real, fake, Condition(pooled, None, None)


def test_packed_discriminator_step_is_the_hinge_loss_on_packs_with_the_first_rows_captions():
    D, real, fake, cond = _setup()
    loss, stats = discriminator_step(D, real, fake, cond, kind="hinge", mismatch_weight=0.5, gp="none", gp_weight=0.0,
                                     apply_gp=False, augment="", autocast=nullcontext, mismatch_shift=2, pack=2)
    c = cond.pooled[[0, 2]]
    wrong = cond.pooled[[2, 0]]  # shifted by the group: the other pack's caption
    with torch.no_grad():
        want = losses.D_LOSSES["hinge"](D(pack_rows(real, 2), c), D(pack_rows(fake, 2), c),
                                        D(pack_rows(real, 2), wrong), 0.5)
    assert torch.allclose(loss.detach(), want, atol=1e-6)
    assert torch.allclose(stats["d/real"], D(pack_rows(real, 2), c).mean().detach(), atol=1e-6)
    # R1 on a pack: gamma/2 times the mean over packs of the squared gradient norm w.r.t. the whole pack
    r1, s = discriminator_step(D, real, fake, cond, kind="hinge", mismatch_weight=0.0, gp="r1", gp_weight=0.1,
                               apply_gp=True, augment="", autocast=nullcontext, pack=2)
    packed = pack_rows(real, 2).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(packed, c).sum(), packed)
    assert torch.allclose(s["loss/gp"], 0.1 * g.pow(2).flatten(1).sum(1).mean(), rtol=1e-4)


def test_packed_generator_step_scores_packs_of_fakes():
    D, _, fake, cond = _setup()
    g_loss, _ = generator_step(D, fake, cond, kind="hinge", augment="", autocast=nullcontext, pack=2)
    with torch.no_grad():
        want = losses.G_LOSSES["hinge"](D(pack_rows(fake, 2), cond.pooled[[0, 2]]))
    assert torch.allclose(g_loss.detach(), want, atol=1e-6)
    # with augmentation shared by a pack (augment_group = pack), two equal rows stay equal inside their pack
    same = fake[:2].repeat_interleave(2, dim=0)  # rows 0,1 equal; rows 2,3 equal
    torch.manual_seed(1)
    from gan.augment import diff_augment

    out = pack_rows(diff_augment(same, "translation,cutout", group=2), 2)
    assert torch.equal(out[:, :3], out[:, 3:])
