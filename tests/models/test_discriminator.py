import pytest
import torch

from gan.models import ProjectionDiscriminator

COND = 12


def tiny(resolution=16, **kw):
    args = dict(resolution=resolution, cond_dim=COND, base_channels=4, max_channels=16)
    args.update(kw)
    torch.manual_seed(0)
    return ProjectionDiscriminator(**args).eval()


def inputs(B=3, resolution=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, resolution, resolution, generator=g) * 2 - 1, torch.randn(B, COND, generator=g)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_output_shape_and_dtype(resolution):
    D = tiny(resolution)
    images, cond = inputs(resolution=resolution)
    logits = D(images, cond)
    assert logits.shape == (3,) and logits.dtype == torch.float32
    assert D.features(images).shape == (3, 16 + 32 * 16)  # pooled channels + flattened 4x4 position map
    assert tiny(resolution, position_channels=None).features(images).shape == (3, 16)


def test_position_features_see_where_content_is():
    # A blob in the top-left vs the bottom-right corner: same pooled statistics up to padding,
    # but the flattened 4x4 map differs in where its energy sits.
    D = tiny(32)
    a = torch.full((1, 3, 32, 32), -1.0)
    b = a.clone()
    a[..., 2:10, 2:10] = 1.0
    b[..., 22:30, 22:30] = 1.0
    pos_a, pos_b = D.features(a)[0, 16:].view(32, 4, 4), D.features(b)[0, 16:].view(32, 4, 4)
    diff_a = (pos_a - D.features(torch.full_like(a, -1.0))[0, 16:].view(32, 4, 4)).abs().sum(0)
    diff_b = (pos_b - D.features(torch.full_like(b, -1.0))[0, 16:].view(32, 4, 4)).abs().sum(0)
    assert diff_a[0, 0] > diff_a[3, 3] and diff_b[3, 3] > diff_b[0, 0]


def test_forward_is_score_of_features_and_mismatch_reuses_them():
    D = tiny()
    images, cond = inputs()
    other = cond.roll(1, dims=0)
    phi = D.features(images)
    assert torch.allclose(D(images, cond), D.score(phi, cond))
    logits, mismatch = D(images, cond, mismatch_cond=other)
    assert torch.allclose(logits, D(images, cond))
    assert torch.allclose(mismatch, D(images, other))
    assert not torch.allclose(logits, mismatch)


def test_projection_is_linear_in_the_condition():
    # logit = linear(phi) + <embed(c), phi>: affine in c for fixed images.
    D = tiny()
    images, cond = inputs()
    zero = D(images, torch.zeros_like(cond))
    assert torch.allclose(D(images, 2 * cond) - zero, 2 * (D(images, cond) - zero), atol=1e-5)


def test_save_and_load_give_identical_outputs(tmp_path):
    for sn in (False, True):
        D = tiny(32, spectral_norm=sn)
        images, cond = inputs(resolution=32)
        D.train()(images, cond)  # let spectral norm run a power iteration so u, v are not the initial ones
        D.eval()
        D.save_pretrained(tmp_path / str(sn))
        assert (tmp_path / str(sn) / "config.json").exists()
        assert (tmp_path / str(sn) / "diffusion_pytorch_model.safetensors").exists()
        D2 = ProjectionDiscriminator.from_pretrained(tmp_path / str(sn)).eval()
        assert D2.config.spectral_norm is sn
        # Not torch.equal: loaded tensors may sit at other alignments, so BLAS may sum in another order.
        assert torch.allclose(D(images, cond), D2(images, cond), rtol=0, atol=1e-5)


def test_deterministic_under_manual_seed():
    images, cond = inputs()
    assert torch.equal(tiny()(images, cond), tiny()(images, cond))


def test_condition_changes_the_score():
    D = tiny()
    images, cond = inputs()
    assert (D(images, cond) - D(images, torch.randn_like(cond))).abs().min() > 1e-4


def test_gradients_reach_every_parameter():
    for sn in (False, True):
        D = tiny(spectral_norm=sn).train()
        images, cond = inputs()
        D(images, cond).square().mean().backward()
        for name, p in D.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (sn, name)


def test_spectral_norm_bounds_each_layer():
    D = tiny(spectral_norm=True).train()
    images, cond = inputs(B=1)
    with torch.no_grad():
        for _ in range(30):  # power iterations converge over calls
            D(images, cond)
    weights = [m.weight for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weights) > 5
    for w in weights:
        sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05, sigma


def test_bf16_autocast_channels_last_close_to_fp32():
    D = tiny(32, base_channels=8, max_channels=16)
    images, cond = inputs(resolution=32)
    ref = D(images, cond)
    D = D.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = D(images.contiguous(memory_format=torch.channels_last), cond)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=0.05, atol=0.05 * ref.abs().max().item()), (out, ref)


@pytest.mark.parametrize(
    "images, cond, message",
    [
        (torch.randn(3, 3, 32, 32), torch.randn(3, COND), "images"),
        (torch.randn(3, 1, 16, 16), torch.randn(3, COND), "images"),
        (torch.randn(3, 3, 16, 16), torch.randn(2, COND), "cond"),
        (torch.randn(3, 3, 16, 16), torch.randn(3, COND + 1), "cond"),
    ],
)
def test_bad_input_shapes_raise_clear_errors(images, cond, message):
    with pytest.raises(ValueError, match=message):
        tiny()(images, cond)


def test_bad_features_shape_raises():
    with pytest.raises(ValueError, match="features"):
        tiny().score(torch.randn(3, 5), torch.randn(3, COND))


@pytest.mark.parametrize("resolution", [24, 8])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="power of two"):
        tiny(resolution)


def test_default_size_is_close_to_the_generator():
    n = sum(p.numel() for p in ProjectionDiscriminator().parameters())
    assert 1_000_000 <= n <= 3_500_000, n


def test_normalize_condition_rows_have_zero_mean_unit_variance_and_zero_stays_zero():
    from gan.models.blocks import normalize_condition

    x = torch.randn(4, 384) * 0.03 + 0.5
    x[3] = 0
    y = normalize_condition(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.allclose(y[:3].mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y[:3].var(1, unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.equal(y[3], torch.zeros(384))  # "no caption" stays distinguishable from every caption


def test_cond_norm_discriminator_scores_ignore_the_condition_scale():
    images, cond = inputs()
    D = tiny(cond_norm=True)
    assert torch.allclose(D(images, 10 * cond), D(images, cond), atol=1e-4)
    raw = tiny(cond_norm=False)
    assert not torch.allclose(raw(images, 10 * cond), raw(images, cond), atol=1e-3)


def test_minibatch_std_closed_form_and_groups_of_consecutive_rows():
    from gan.models.discriminator import minibatch_std

    h = torch.zeros(4, 2, 1, 1)
    h[1] = 2.0  # group (0, 1): every feature is 0 or 2 -> population std 1; group (2, 3): identical -> 0
    s = minibatch_std(h, 2)
    assert s.shape == (4, 1, 1, 1)
    assert torch.allclose(s.flatten(), torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-3)
    with pytest.raises(ValueError, match="batch 6 is not a multiple of the group size 4"):
        minibatch_std(torch.zeros(6, 2, 4, 4), 4)
    assert minibatch_std(torch.zeros(3, 2, 4, 4), 4).shape == (3, 1, 4, 4)  # smaller batch: one group
    # spatial: one std per location, averaged over channels only: |a - b| / 2 for a group of two
    h = torch.zeros(2, 3, 2, 2)
    h[0, :, 0, 1] = torch.tensor([2.0, 4.0, 0.0])  # the rows differ at one location only
    m = minibatch_std(h, 2, spatial=True)
    want = torch.zeros(2, 2)
    want[0, 1] = (1.0 + 2.0 + 0.0) / 3
    assert m.shape == (2, 1, 2, 2) and torch.allclose(m[0, 0], want, atol=1e-3) and torch.equal(m[0], m[1])
    assert torch.allclose(minibatch_std(h, 2), m.mean(dim=(2, 3), keepdim=True).expand_as(m), atol=1e-3)


def test_mbstd_discriminator_scores_depend_on_the_group_only(tmp_path):
    torch.manual_seed(0)
    D = ProjectionDiscriminator(resolution=16, cond_dim=6, base_channels=4, max_channels=16, mbstd_group=2).eval()
    x, c = torch.randn(4, 3, 16, 16), torch.randn(4, 6)
    y = x.clone()
    y[0] = torch.randn(3, 16, 16)  # change row 0: its group partner's score moves, the other group's does not
    a, b = D(x, c), D(y, c)
    assert (a[1] - b[1]).abs() > 1e-5 and torch.equal(a[2:], b[2:])
    D.save_pretrained(tmp_path / "d")
    loaded = ProjectionDiscriminator.from_pretrained(tmp_path / "d").eval()
    assert loaded.config.mbstd_group == 2 and torch.equal(loaded(x, c), a)
    with pytest.raises(ValueError, match="mbstd_group must be 0 \\(off\\) or >= 2, got 1"):
        ProjectionDiscriminator(resolution=16, cond_dim=6, base_channels=4, max_channels=16, mbstd_group=1)
    spatial = ProjectionDiscriminator(resolution=16, cond_dim=6, base_channels=4, max_channels=16, mbstd_group=2,
                                      mbstd_spatial=True).eval()
    a = spatial(x, c)
    assert torch.equal(a[2:], spatial(y, c)[2:])  # still group-local
    spatial.save_pretrained(tmp_path / "s")
    assert torch.equal(ProjectionDiscriminator.from_pretrained(tmp_path / "s").eval()(x, c), a)
    with pytest.raises(ValueError, match="mbstd_spatial needs mbstd_group >= 2"):
        ProjectionDiscriminator(resolution=16, cond_dim=6, base_channels=4, max_channels=16, mbstd_spatial=True)
