import math

import pytest
import torch

from gan.losses import (
    D_LOSSES,
    G_LOSSES,
    d_hinge,
    d_nonsaturating,
    g_hinge,
    g_nonsaturating,
    matching_aware_gp,
    r1_penalty,
    sonify_loss,
)

REAL = torch.tensor([2.0, -0.5, 0.3])
FAKE = torch.tensor([-2.0, 0.5, 2.5])
MISMATCH = torch.tensor([0.0, -1.5, 3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def test_d_hinge_by_hand():
    real_term = (0 + 1.5 + 0.7) / 3  # relu(1 - real)
    fake_term = (0 + 1.5 + 3.5) / 3  # relu(1 + fake)
    mis_term = (1.0 + 0 + 4.0) / 3  # relu(1 + mismatch)
    assert d_hinge(REAL, FAKE).item() == pytest.approx(real_term + fake_term)
    assert d_hinge(REAL, FAKE, MISMATCH).item() == pytest.approx(real_term + 0.5 * fake_term + 0.5 * mis_term)
    assert d_hinge(REAL, FAKE, MISMATCH, mismatch_weight=0.25).item() == pytest.approx(
        real_term + 0.75 * fake_term + 0.25 * mis_term
    )


def test_g_hinge_by_hand():
    assert g_hinge(FAKE).item() == pytest.approx(-1.0 / 3)


def test_nonsaturating_by_hand():
    real_term = sum(softplus(-v) for v in REAL.tolist()) / 3
    fake_term = sum(softplus(v) for v in FAKE.tolist()) / 3
    mis_term = sum(softplus(v) for v in MISMATCH.tolist()) / 3
    assert d_nonsaturating(REAL, FAKE).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    assert d_nonsaturating(REAL, FAKE, MISMATCH).item() == pytest.approx(
        real_term + 0.5 * fake_term + 0.5 * mis_term, rel=1e-6
    )
    assert g_nonsaturating(FAKE).item() == pytest.approx(sum(softplus(-v) for v in FAKE.tolist()) / 3, rel=1e-6)


def test_losses_return_float32_scalars_from_bf16_logits():
    for loss in (d_hinge(REAL.bfloat16(), FAKE.bfloat16(), MISMATCH.bfloat16()), g_nonsaturating(FAKE.bfloat16())):
        assert loss.dtype == torch.float32 and loss.dim() == 0


def test_bad_mismatch_weight_raises():
    with pytest.raises(ValueError, match="mismatch_weight"):
        d_hinge(REAL, FAKE, MISMATCH, mismatch_weight=1.5)


def test_registries():
    assert D_LOSSES == {"hinge": d_hinge, "nonsaturating": d_nonsaturating}
    assert G_LOSSES == {"hinge": g_hinge, "nonsaturating": g_nonsaturating}


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))  # D(x) = <w, x>  =>  grad = w for every sample
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    # The graph is kept so the penalty can train D: d||w||^2 / dw = 2w.
    penalty.backward()
    assert torch.allclose(w.grad, 2 * w.detach(), atol=1e-5)


def test_r1_averages_per_sample_norms():
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    logits = 0.5 * x.pow(2).sum(dim=1)  # grad = x  =>  norms 5 and 9
    assert r1_penalty(logits, x).item() == pytest.approx(7.0)


def test_matching_aware_gp_closed_form():
    torch.manual_seed(0)
    w, u = torch.randn(3, 4, 4), torch.randn(6)
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    c = torch.randn(4, 6, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3)) + c @ u  # grads: w for x, u for c
    sq = w.pow(2).sum().item() + u.pow(2).sum().item()
    assert matching_aware_gp(logits, x, c).item() == pytest.approx(2 * sq**3, rel=1e-5)
    assert matching_aware_gp(logits, x, c, p=2, k=1).item() == pytest.approx(sq, rel=1e-5)


def test_matching_aware_gp_per_sample_norms():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    c = torch.tensor([[0.0], [0.0]], requires_grad=True)
    logits = 0.5 * x.pow(2).sum(dim=1) + 2.0 * c[:, 0]  # |g|^2 = |x|^2 + 4 = 5 and 8
    expected = 2.0 * (5.0**3 + 8.0**3) / 2
    assert matching_aware_gp(logits, x, c).item() == pytest.approx(expected, rel=1e-6)


def test_matching_aware_gp_has_finite_gradient_at_zero_gradient():
    x = torch.zeros(2, 3, requires_grad=True)
    c = torch.zeros(2, 2, requires_grad=True)
    w = torch.zeros(3, requires_grad=True)
    logits = x @ w + 0.0 * c.sum(dim=1)
    matching_aware_gp(logits, x, c).backward()
    assert torch.isfinite(w.grad).all()


def test_penalties_need_inputs_that_require_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(x.sum(dim=1), x)
    xg = x.clone().requires_grad_()
    with pytest.raises(ValueError, match="cond"):
        matching_aware_gp(xg.sum(dim=1), xg, torch.randn(2, 4))


def test_mode_seeking_is_the_inverse_distance_ratio():
    from gan.losses import mode_seeking

    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    za, zb = torch.zeros(2, 8), torch.full((2, 8), 2.0)
    # mean|a-b| = 0.5, mean|za-zb| = 2 -> ratio 0.25 -> loss 1 / 0.25
    assert mode_seeking(a, b, za, zb, eps=0.0).item() == pytest.approx(4.0)
    assert mode_seeking(a, a, za, zb).item() == pytest.approx(1e5)  # identical images: collapse, maximal
    with pytest.raises(ValueError, match="shapes differ"):
        mode_seeking(a, b[:1], za, zb)


def test_info_nce_closed_form_and_masking():
    import math

    from gan.losses import info_nce

    a = torch.eye(3)
    # perfectly aligned orthogonal pairs: logits 1/t on the diagonal, 0 elsewhere
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert info_nce(a, a, t).item() == pytest.approx(expected, rel=1e-6)
    b = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # rows 0 and 1 share one caption vector
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert info_nce(b, b, t, positives=same).item() < info_nce(b, b, t).item()
    with pytest.raises(ValueError, match="one shape"):
        info_nce(a, a[:2])


def test_sonify_loss_is_the_mean_absolute_error_in_float32():
    a = torch.tensor([[[[0.5, -1.0], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    b = torch.tensor([[[[0.0, -0.5], [1.0, 1.0]]]])
    out = sonify_loss(a.bfloat16(), b)
    assert out.dtype == torch.float32 and out.item() == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    with pytest.raises(ValueError, match=r"sonify_loss: predicted \(1, 1, 2, 2\) and target \(1, 1, 2, 1\) differ"):
        sonify_loss(a, b[..., :1])
