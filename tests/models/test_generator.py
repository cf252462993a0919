import math

import pytest
import torch

from gan.models import ConditionalGenerator

Z, COND, TOK = 8, 12, 10


def tiny(resolution=16, **kw):
    args = dict(resolution=resolution, z_dim=Z, cond_dim=COND, token_dim=TOK, base_channels=4,
                max_channels=16, attention_resolutions=(8,))
    args.update(kw)
    torch.manual_seed(0)
    return ConditionalGenerator(**args).eval()


def inputs(B=3, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, Z, generator=g)
    cond = torch.randn(B, COND, generator=g)
    tokens = torch.randn(B, L, TOK, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False  # sample 0 has two padding positions
    return z, cond, tokens, mask


def open_gates(G, value=1.0):
    """Gates start at 0 (attention = identity); open them so tokens actually matter."""
    with torch.no_grad():
        for attn in G.attn.values():
            attn.gate.fill_(value)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_output_shape_and_range(resolution):
    G = tiny(resolution, attention_resolutions=(8, 16))
    z, cond, tokens, mask = inputs()
    for out in (G(z, cond), G(z, cond, tokens, mask)):
        assert out.shape == (3, 3, resolution, resolution)
        assert out.abs().max() <= 1.0
    assert sorted(G.attn.keys()) == ["16", "8"]


def test_gate_starts_closed_so_tokens_change_nothing_at_init():
    G = tiny()
    z, cond, tokens, mask = inputs()
    assert torch.equal(G(z, cond), G(z, cond, tokens, mask))


def test_masked_tokens_do_not_affect_output():
    G = tiny()
    open_gates(G)
    z, cond, tokens, mask = inputs()
    out = G(z, cond, tokens, mask)
    changed = tokens.clone()
    changed[0, 3:] = 100.0 * torch.randn(2, TOK)  # only padding positions of sample 0
    assert torch.allclose(G(z, cond, changed, mask), out, atol=1e-6)
    # ...while a real token of the same sample does change it (the check above can fail).
    changed[0, 0] = 3.0 * torch.randn(TOK)  # not a constant shift: LayerNorm would erase that
    assert not torch.allclose(G(z, cond, changed, mask)[0], out[0], atol=1e-4)


def test_sample_without_any_real_token_gets_no_attention():
    G = tiny()
    open_gates(G)
    z, cond, tokens, _ = inputs()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    out = G(z, cond, tokens, mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1], G(z, cond)[1], atol=1e-6)
    assert not torch.allclose(out[0], G(z, cond)[0], atol=1e-4)


def test_token_dim_none_builds_no_attention_and_ignores_tokens():
    G = tiny(token_dim=None)
    assert len(G.attn) == 0
    z, cond, tokens, mask = inputs()
    assert torch.equal(G(z, cond, tokens, mask), G(z, cond))


def test_save_and_load_give_identical_outputs(tmp_path):
    G = tiny(32, attention_resolutions=(16,))
    open_gates(G, 0.7)  # a non-default value must survive the round trip
    G.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    G2 = ConditionalGenerator.from_pretrained(tmp_path).eval()
    assert G2.config.attention_resolutions in ((16,), [16])
    z, cond, tokens, mask = inputs()
    # Not torch.equal: loaded tensors may sit at other alignments, so BLAS may sum in another order.
    assert torch.allclose(G(z, cond, tokens, mask), G2(z, cond, tokens, mask), rtol=0, atol=1e-6)


def test_deterministic_under_manual_seed():
    z, cond, tokens, mask = inputs()
    assert torch.equal(tiny()(z, cond, tokens, mask), tiny()(z, cond, tokens, mask))


def test_condition_and_noise_change_the_image():
    G = tiny()
    z, cond, _, _ = inputs()
    out = G(z, cond)
    assert (G(z, cond + torch.randn_like(cond)) - out).abs().mean() > 1e-4
    assert (G(z + torch.randn_like(z), cond) - out).abs().mean() > 1e-4


def test_gradients_reach_every_parameter():
    G = tiny().train()
    open_gates(G, 0.5)
    z, cond, tokens, mask = inputs()
    G(z, cond, tokens, mask).square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_gradients_reach_every_parameter_at_init_except_through_closed_gate():
    # With the gate at 0 the attention weights get zero (not missing) gradients.
    G = tiny().train()
    z, cond, tokens, mask = inputs()
    G(z, cond, tokens, mask).square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None, name
        if name.startswith("attn.") and not name.endswith("gate"):
            continue
        assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_channels_last_close_to_fp32():
    G = tiny(32, base_channels=8, max_channels=16, attention_resolutions=(16,))
    open_gates(G, 0.5)
    z, cond, tokens, mask = inputs()
    ref = G(z, cond, tokens, mask)
    G = G.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = G(z, cond, tokens, mask)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert out.is_contiguous(memory_format=torch.channels_last)
    err = (out.float() - ref).abs().max().item()
    assert err < 0.05 * max(1e-3, ref.abs().max().item()) + 0.01, err


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(z=torch.randn(3, Z + 1)), "z"),
        (dict(cond=torch.randn(2, COND)), "cond"),
        (dict(cond=torch.ones(3, COND, dtype=torch.long)), "float"),
        (dict(tokens=torch.randn(3, 5, TOK + 2)), "tokens"),
        (dict(token_mask=torch.ones(3, 4, dtype=torch.bool)), "token_mask"),
        (dict(token_mask=torch.ones(3, 5)), "bool"),
    ],
)
def test_bad_input_shapes_raise_clear_errors(bad, message):
    G = tiny()
    z, cond, tokens, mask = inputs()
    args = dict(z=z, cond=cond, tokens=tokens, token_mask=mask)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        G(**args)


def test_mask_without_tokens_raises():
    G = tiny()
    z, cond, _, mask = inputs()
    with pytest.raises(ValueError, match="token_mask"):
        G(z, cond, token_mask=mask)


@pytest.mark.parametrize("resolution", [24, 8, 0])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="power of two"):
        tiny(resolution)


def test_attention_resolution_outside_the_model_raises():
    with pytest.raises(ValueError, match="attention_resolutions"):
        tiny(16, attention_resolutions=(32,))


def test_default_parameter_count():
    n = sum(p.numel() for p in ConditionalGenerator().parameters())
    assert 2_000_000 <= n <= 3_500_000, n


def test_sample_noise_plain_matches_randn():
    a = ConditionalGenerator.sample_noise(4, 7, torch.Generator().manual_seed(3))
    b = torch.randn(4, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = ConditionalGenerator.sample_noise(4, 7, torch.Generator().manual_seed(3), truncation=10.0)
    assert torch.equal(a, c)


def test_sample_noise_truncation_bounds_and_variance():
    t = 1.0
    z = ConditionalGenerator.sample_noise(400, 250, torch.Generator().manual_seed(0), truncation=t)
    assert z.shape == (400, 250) and z.dtype == torch.float32
    assert z.abs().max() <= t
    # Variance of N(0, 1) truncated to [-t, t]: 1 - 2 t phi(t) / (2 Phi(t) - 1)
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    var = 1 - 2 * t * phi / math.erf(t / math.sqrt(2))
    assert abs(z.var().item() - var) < 0.01
    assert abs(z.mean().item()) < 0.01
    small = ConditionalGenerator.sample_noise(8, 8, None, truncation=0.01)
    assert small.abs().max() <= 0.01 and small.std() > 0


def test_sample_noise_reproducible_and_rejects_bad_truncation():
    a = ConditionalGenerator.sample_noise(3, 5, torch.Generator().manual_seed(9), truncation=0.5)
    b = ConditionalGenerator.sample_noise(3, 5, torch.Generator().manual_seed(9), truncation=0.5)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="truncation"):
        ConditionalGenerator.sample_noise(3, 5, None, truncation=0.0)


def test_cond_norm_makes_the_condition_scale_free_and_survives_save_load(tmp_path):
    z, cond, _, _ = inputs()
    G = tiny(cond_norm=True)
    out = G(z, cond)
    # layer norm: only the condition's direction relative to its own mean matters, not its size
    assert torch.allclose(G(z, 0.05 * cond), out, atol=1e-5)
    assert torch.allclose(G(z, 0.05 * cond + 3.0), out, atol=1e-5)
    # the raw model (same weights) sees the rescaled condition as a different one
    raw = tiny(cond_norm=False)
    assert not torch.allclose(raw(z, 0.05 * cond), raw(z, cond), atol=1e-4)
    G.save_pretrained(tmp_path)
    G2 = ConditionalGenerator.from_pretrained(tmp_path).eval()
    assert G2.config.cond_norm is True
    assert torch.allclose(G2(z, 0.05 * cond), out, atol=1e-5)


def test_upsample_modes_follow_their_closed_forms():
    from gan.models.blocks import UpBlock

    x = torch.tensor([[[[1.0, 5.0]]]])  # (1, 1, 1, 2): one row, values a = 1, b = 5
    near = UpBlock(1, 1, 4, upsample="nearest")._up(x)
    bil = UpBlock(1, 1, 4, upsample="bilinear")._up(x)
    assert near[0, 0].tolist() == [[1, 1, 5, 5]] * 2
    # half-pixel centres, edges clamped: a, 3/4 a + 1/4 b, 1/4 a + 3/4 b, b
    assert torch.allclose(bil[0, 0], torch.tensor([[1.0, 2.0, 4.0, 5.0]] * 2))
    with pytest.raises(ValueError, match=r"UpBlock: upsample must be one of \('nearest', 'bilinear'\), got 'bicubic'"):
        UpBlock(1, 1, 4, upsample="bicubic")


def test_bilinear_generator_differs_from_nearest_and_survives_save_load(tmp_path):
    z, cond, tokens, mask = inputs()
    G = tiny(upsample="bilinear")
    nearest = tiny()  # same seed, same weights: only the up-sampling differs
    assert not torch.allclose(G(z, cond, tokens, mask), nearest(z, cond, tokens, mask), atol=1e-4)
    G.save_pretrained(tmp_path)
    G2 = ConditionalGenerator.from_pretrained(tmp_path).eval()
    assert G2.config.upsample == "bilinear"
    assert torch.allclose(G2(z, cond, tokens, mask), G(z, cond, tokens, mask), rtol=0, atol=1e-6)
