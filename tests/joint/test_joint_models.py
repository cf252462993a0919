"""Joint generator/discriminator: shapes where modules meet, save/load, mismatched pairs, losses."""

import pytest
import torch

from gan import losses
from gan.joint.models import JointDiscriminator, JointGenerator
from gan.training.joint_steps import (blend_conditions, drop_condition, drop_words, joint_discriminator_step,
                                     joint_generator_step, shifted_pairs)

pytestmark = pytest.mark.usefixtures("one_thread")
COND = 12


def tiny(cond_dim=COND, **kw):
    torch.manual_seed(0)
    G = JointGenerator(image_resolution=16, audio_resolution=32, z_dim=8, cond_dim=cond_dim, base_channels=4,
                       audio_channels=4, max_channels=16, trunk_resolution=8, **kw)
    D = JointDiscriminator(image_resolution=16, audio_resolution=32, cond_dim=cond_dim, base_channels=4,
                           audio_channels=4, max_channels=16, position_channels=2, joint_dim=8)
    return G.eval(), D.eval()


def test_shapes_ranges_and_heads():
    G, D = tiny()
    z, c = torch.randn(5, 8), torch.randn(5, COND)
    images, mels = G(z, c)
    assert images.shape == (5, 3, 16, 16) and mels.shape == (5, 1, 32, 32)
    assert images.abs().max() <= 1 and mels.abs().max() <= 1
    out = D(images, mels, c, c.roll(1, 0), shifted_pairs(5, "cpu"))
    assert set(out) == {"image", "audio", "joint", "image_mismatch", "audio_mismatch", "joint_mismatch", "pairs"}
    assert all(v.shape == (5,) and v.dtype == torch.float32 for v in out.values())
    # the caption matters to every head, so a wrong caption changes every score
    assert all(not torch.allclose(out[h], out[f"{h}_mismatch"]) for h in ("image", "audio", "joint"))


def test_pairs_score_exactly_the_re_paired_rows():
    G, D = tiny()
    images, mels = G(torch.randn(4, 8), c := torch.randn(4, COND))
    pairs = shifted_pairs(4, "cpu")
    assert pairs.tolist() == [[0, 1], [1, 2], [2, 3], [3, 0]]  # image i with the sound of row i+1
    got = D(images, mels, c, pairs=pairs)["pairs"]
    # the same numbers as scoring hand-built mismatched batches (image i, sound i+1, caption i)
    want = D(images, mels.roll(-1, 0), c)["joint"]
    assert torch.allclose(got, want, atol=1e-5)
    # and identity pairs are the matched pairs
    same = D(images, mels, c, pairs=torch.stack([torch.arange(4)] * 2, 1))
    assert torch.allclose(same["pairs"], same["joint"], atol=1e-5)


def test_unconditional_models_refuse_a_condition_and_conditioned_ones_need_it():
    G, D = tiny(cond_dim=0)
    images, mels = G(torch.randn(2, 8))
    assert set(D(images, mels)) == {"image", "audio", "joint"}
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, 8), torch.randn(2, 3))
    Gc, _ = tiny()
    with pytest.raises(ValueError, match="cond is required"):
        Gc(torch.randn(2, 8))
    with pytest.raises(ValueError, match="JointDiscriminator images"):
        D(torch.zeros(2, 3, 32, 32), mels)


def test_minibatch_std_scores_each_group_of_rows_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    D = JointDiscriminator(image_resolution=16, audio_resolution=32, base_channels=4, audio_channels=4,
                           max_channels=16, position_channels=2, joint_dim=8, mbstd_group=2).eval()
    images, mels = torch.randn(4, 3, 16, 16), torch.randn(4, 1, 32, 32)
    out = D(images, mels, pairs=shifted_pairs(4, "cpu"))
    # a row's score depends on its group's rows only: group 1 made a copy of group 0 scores as group 0
    copies = D(images[[0, 1, 0, 1]], mels[[0, 1, 0, 1]])
    # and row 0 beside a copy of itself (no spread) scores differently, group 1 untouched
    alike = D(images[[0, 0, 2, 3]], mels[[0, 0, 2, 3]])
    for h in ("image", "audio", "joint"):
        assert torch.allclose(copies[h][2:], out[h][:2], atol=1e-6)
        assert torch.allclose(alike[h][2:], out[h][2:], atol=1e-6)
        assert abs(alike[h][0] - out[h][0]) > 1e-4
    # a picture copied within its group is seen by the image branch alone; the sound's score stays
    same_sound = D(images[[0, 0, 2, 3]], mels)
    assert torch.allclose(same_sound["audio"], out["audio"], atol=1e-6)
    assert abs(same_sound["image"][0] - out["image"][0]) > 1e-4
    D.save_pretrained(tmp_path / "d")
    loaded = JointDiscriminator.from_pretrained(tmp_path / "d").eval()
    assert loaded.config.mbstd_group == 2 and torch.equal(loaded(images, mels)["joint"], D(images, mels)["joint"])
    with pytest.raises(ValueError, match="batch 3 is not a multiple of the group size 2"):
        D(images[:3], mels[:3])
    with pytest.raises(ValueError, match=r"mbstd_group must be 0 \(off\) or >= 2, got 1"):
        JointDiscriminator(mbstd_group=1)


def test_save_load_round_trip_keeps_outputs_and_mel_settings(tmp_path):
    G, D = tiny(mel={"n_mels": 32})
    G.save_pretrained(tmp_path / "g")
    D.save_pretrained(tmp_path / "d")
    G2, D2 = JointGenerator.from_pretrained(tmp_path / "g").eval(), JointDiscriminator.from_pretrained(tmp_path / "d")
    z, c = torch.randn(3, 8), torch.randn(3, COND)
    for a, b in zip(G(z, c), G2(z, c)):
        assert torch.equal(a, b)
    assert G2.config.mel == {"n_mels": 32}
    im, mel = G(z, c)
    assert torch.equal(D(im, mel, c)["joint"], D2.eval()(im, mel, c)["joint"])
    assert list(tmp_path.glob("g/*.safetensors"))


def test_word_tokens_reach_both_outputs_and_a_row_without_words_ignores_them(tmp_path):
    G, _ = tiny(token_dim=6, attention_resolutions=(4, 8))
    assert sorted(G.attn) == ["4", "8"]
    for block in G.attn.values():  # gates start at 0 (no effect); open them to see the path
        block.gate.data.fill_(1.0)
    z, c = torch.randn(3, 8), torch.randn(3, COND)
    tokens, mask = torch.randn(3, 5, 6), torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False  # row 0 has 3 real words; its padding must not matter
    images, mels = G(z, c, tokens, mask)
    other = tokens.clone()
    other[0, 3:] += 5.0
    assert torch.equal(G(z, c, other, mask)[0][0], images[0])
    other[1] += 1.0  # different words for row 1 change its picture AND its sound
    im2, mel2 = G(z, c, other, mask)
    assert not torch.allclose(im2[1], images[1]) and not torch.allclose(mel2[1], mels[1])
    none = torch.zeros(3, 5, dtype=torch.bool)  # no caption: attention adds nothing, whatever the tokens
    G.attn.clear()
    plain = G(z, c, None, None)
    G2, _ = tiny(token_dim=6, attention_resolutions=(4, 8))
    for block in G2.attn.values():
        block.gate.data.fill_(1.0)
    for a, b in zip(G2(z, c, tokens, none), plain):
        assert torch.allclose(a, b, atol=1e-6)
    G2.save_pretrained(tmp_path / "g")
    G3 = JointGenerator.from_pretrained(tmp_path / "g").eval()
    assert G3.config.token_dim == 6 and torch.equal(G3(z, c, tokens, mask)[1], G2(z, c, tokens, mask)[1])
    with pytest.raises(ValueError, match="tokens and token_mask are required"):
        G2(z, c)
    with pytest.raises(ValueError, match="JointGenerator tokens"):
        G2(z, c, torch.randn(3, 5, 7), mask)
    with pytest.raises(ValueError, match="no cross-attention"):
        tiny()[0](z, c, tokens, mask)
    with pytest.raises(ValueError, match=r"attention_resolutions must be a non-empty subset of the trunk sizes \[4, 8\]"):
        tiny(token_dim=6, attention_resolutions=(16,))


def test_drop_condition_zeroes_whole_rows_at_the_given_rate():
    c = torch.ones(20000, 3)
    out = drop_condition(c, 0.2, torch.Generator().manual_seed(0))
    zero = (out == 0).all(1)
    assert ((out == 1).all(1) | zero).all()  # a row is kept whole or dropped whole
    assert abs(zero.float().mean().item() - 0.2) < 0.01  # 3 sigma of a binomial(20000, 0.2) is 0.0085
    assert drop_condition(c, 0.0) is c
    mask = torch.ones(20000, 4, dtype=torch.bool)
    out, out_mask = drop_condition(c, 0.2, torch.Generator().manual_seed(0), token_mask=mask)
    assert torch.equal((out == 0).all(1), ~out_mask.any(1)) and torch.equal(out_mask.all(1), out_mask.any(1))


def test_drop_words_hides_real_tokens_independently_at_the_given_rate():
    mask = torch.rand(4000, 12, generator=torch.Generator().manual_seed(1)) < 0.75  # padding is False
    out = drop_words(mask, 0.3, torch.Generator().manual_seed(0))
    assert not (out & ~mask).any()  # padding stays hidden; nothing is revealed
    hidden = (mask & ~out).sum().item() / mask.sum().item()
    assert abs(hidden - 0.3) < 0.01  # 3 sigma of a binomial(~36000, 0.3) is 0.0073
    per_row = (mask & ~out).sum(1).float() / mask.sum(1).clamp(min=1)
    assert per_row.std() > 0.05  # each token on its own, not whole rows
    assert drop_words(mask, 0.0) is mask


def test_blend_conditions_interpolates_captioned_neighbours_and_is_judged_uncaptioned():
    B, L = 4000, 3
    cond = torch.randn(B, 5)
    cond[::10] = 0  # every tenth row uncaptioned
    tokens, mask = torch.randn(B, L, 2), torch.rand(B, L) < 0.7
    mask[::10] = False
    g_cond, g_tok, g_mask, d_cond = blend_conditions(cond, 0.5, tokens, mask, torch.Generator().manual_seed(0))
    captioned = cond.abs().sum(1) > 0
    blended = (d_cond == 0).all(1) & captioned  # judged as uncaptioned although it had a caption
    eligible = captioned & captioned.roll(1, 0)
    assert not (blended & ~eligible).any()  # never blends towards (or from) a row without a caption
    assert abs(blended[eligible].float().mean().item() - 0.5) < 0.035  # 3 sigma of binomial(~3200, 0.5)
    assert torch.equal(g_cond[~blended], cond[~blended]) and torch.equal(d_cond[~blended], cond[~blended])
    # each blended row lies on the segment from its caption to its neighbour's, at t in (0, 1)
    a, b, g = cond[blended], cond.roll(1, 0)[blended], g_cond[blended]
    t = ((g - a) * (b - a)).sum(1) / ((b - a) ** 2).sum(1)
    assert torch.allclose(g, a + t[:, None] * (b - a), atol=1e-5) and (t > 0).all() and (t < 1).all()
    assert abs(t.mean().item() - 0.5) < 0.03  # U(0, 1)
    # words: the row's own, then the neighbour's only where blended
    assert g_tok.shape == (B, 2 * L, 2) and torch.equal(g_tok[:, :L], tokens) and torch.equal(g_tok[:, L:], tokens.roll(1, 0))
    assert torch.equal(g_mask[:, :L], mask) and torch.equal(g_mask[:, L:], mask.roll(1, 0) & blended[:, None])
    same = blend_conditions(cond, 0.0)
    assert torch.equal(same[0], cond) and torch.equal(same[3], cond) and same[1] is None


def test_discriminator_step_adds_the_pair_term_and_r1_and_generator_step_uses_all_heads():
    G, D = tiny()
    D.train()
    c = torch.randn(4, COND)
    real_i, real_m = G(torch.randn(4, 8), c)
    fake_i, fake_m = G(torch.randn(4, 8), c)
    real_i, real_m, fake_i, fake_m = (t.detach() for t in (real_i, real_m, fake_i, fake_m))
    from contextlib import nullcontext

    kw = dict(kind="hinge", mismatch_weight=0.5, gp_weight=0.0, apply_gp=False, augment="", autocast=nullcontext)
    without, s0 = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=0.0, **kw)
    with_pairs, s1 = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=2.0, **kw)
    pair_logits = D(real_i, real_m, c, pairs=shifted_pairs(4, "cpu"))["pairs"]
    assert torch.allclose(with_pairs - without, 2.0 * losses.fake_hinge(pair_logits), atol=1e-5)
    assert torch.allclose(s1["loss/d"], s1["loss/d_image"] + s1["loss/d_audio"] + s1["loss/d_joint"]
                          + 2.0 * s1["loss/d_pairs"], atol=1e-5)
    near_m = torch.roll(real_m, 2, dims=0) + 0.1  # stand-ins for the near-miss sounds of rows 0..3
    with_near, s3 = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=2.0, near_mels=near_m,
                                             near_miss_weight=3.0, **kw)
    near_logits = D(real_i, real_m, c, pairs=torch.stack([torch.arange(4), torch.arange(4) + 4], 1),
                    pair_mels=near_m)["pairs"]  # image i with near_m[i], audio row 4 + i
    assert torch.allclose(with_near - with_pairs, 3.0 * losses.fake_hinge(near_logits), atol=1e-5)
    assert torch.allclose(s3["d/near_miss"], near_logits.mean(), atol=1e-5)
    assert torch.allclose(s3["loss/d_pairs"], s1["loss/d_pairs"], atol=1e-6)  # the shifted pairs are unchanged
    with_free, s4 = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=2.0, near_mels=near_m,
                                             near_miss_weight=3.0, free_pair_weight=1.5, **kw)
    shifted = shifted_pairs(4, "cpu")
    free_logits = D(real_i, real_m, c, pairs=shifted, pair_cond=torch.zeros(4, COND))["pairs"]
    # no caption: the projection term vanishes and only the joint head's linear part scores the pair
    phi = D.joint(torch.cat([D.image(real_i, "i"), D.audio(real_m, "a").roll(-1, 0)], 1))
    assert torch.allclose(free_logits, D.linear["joint"](phi).squeeze(1), atol=1e-5)
    assert torch.allclose(with_free - with_near, 1.5 * losses.fake_hinge(free_logits), atol=1e-5)
    assert torch.allclose(s4["d/near_miss"], s3["d/near_miss"], atol=1e-6)
    gp, s2 = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=0.0,
                                      **{**kw, "gp_weight": 1.0, "apply_gp": True})
    assert s2["loss/gp"] > 0 and torch.allclose(gp - without, s2["loss/gp"], atol=1e-4)
    fc = c.clone()
    fc[1] = 0  # a blended fake is judged against the no-caption condition; the real rows keep theirs
    judged, _ = joint_discriminator_step(D, real_i, real_m, fake_i, fake_m, c, pair_weight=0.0, fake_cond=fc, **kw)
    out_r, out_f = D(real_i, real_m, c, c.roll(1, 0)), D(fake_i, fake_m, fc)
    expected = sum(losses.D_LOSSES["hinge"](out_r[h], out_f[h], out_r[f"{h}_mismatch"], 0.5)
                   for h in ("image", "audio", "joint"))
    assert torch.allclose(judged, expected, atol=1e-5) and not torch.allclose(judged, without, atol=1e-5)
    g_loss, g_stats = joint_generator_step(D, fake_i, fake_m, c, kind="hinge", augment="", autocast=nullcontext)
    out = D(fake_i, fake_m, c)
    assert torch.allclose(g_loss, -(out["image"].mean() + out["audio"].mean() + out["joint"].mean()), atol=1e-5)


def test_cond_norm_joint_models_ignore_the_condition_scale_and_keep_no_caption_apart():
    torch.manual_seed(0)
    kw = dict(image_resolution=16, audio_resolution=32, cond_dim=COND, base_channels=4, max_channels=16)
    G = JointGenerator(z_dim=8, audio_channels=4, trunk_resolution=8, cond_norm=True, **kw).eval()
    D = JointDiscriminator(audio_channels=4, position_channels=2, joint_dim=8, cond_norm=True, **kw).eval()
    z, c = torch.randn(3, 8), torch.randn(3, COND)
    images, mels = G(z, c)
    small_i, small_m = G(z, 0.01 * c)
    assert torch.allclose(images, small_i, atol=1e-5) and torch.allclose(mels, small_m, atol=1e-5)
    none_i, _ = G(z, torch.zeros_like(c))  # the no-caption row (zeros) is not some caption's image
    assert (none_i - images).abs().mean() > 1e-4
    a, b = D(images, mels, c), D(images, mels, 0.01 * c)
    assert all(torch.allclose(a[h], b[h], atol=1e-4) for h in ("image", "audio", "joint"))


@pytest.mark.parametrize("head_style", ["w", "trunk"])
def test_head_style_decides_what_modulates_both_heads(head_style, tmp_path):
    G, _ = tiny(head_style=head_style)
    seen = {}

    def grab(name):
        return lambda module, args: seen.__setitem__(name, args)

    G.image_blocks[0].register_forward_pre_hook(grab("image"))
    G.audio_blocks[0].register_forward_pre_hook(grab("audio"))
    z, c = torch.randn(3, 8), torch.randn(3, COND)
    images, mels = G(z, c)
    (h, w_image), (h_audio, w_audio) = seen["image"], seen["audio"]
    assert torch.equal(h, h_audio) and torch.equal(w_image, w_audio)  # one trunk map, one style for both heads
    if head_style == "w":
        assert torch.allclose(w_image, G.mapping(torch.cat([z, c], 1)), atol=1e-6)
    else:  # read from the trunk's map alone: the caption reaches the heads only through it
        assert torch.allclose(w_image, G.trunk_style(h.mean(dim=(2, 3))), atol=1e-6)
    G.save_pretrained(tmp_path)
    G2 = JointGenerator.from_pretrained(tmp_path).eval()
    assert G2.config.head_style == head_style
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(G2(z, c), (images, mels)))
    with pytest.raises(ValueError, match="head_style must be 'w' or 'trunk', got 'x'"):
        tiny(head_style="x")


def test_audio_source_image_makes_the_sound_from_the_picture(tmp_path):
    G, _ = tiny(audio_source="image", token_dim=None)
    seen = {}
    G.audio_blocks[0].register_forward_pre_hook(lambda module, args: seen.__setitem__("audio", args))
    z, c = torch.randn(3, 8), torch.randn(3, COND)
    images, mels = G(z, c)
    a, w_audio = seen["audio"]
    read = G.image_reader(images, "pictures")  # (B, F): a vector that keeps where things are
    assert read.shape == (3, G.image_reader.feature_dim)
    assert torch.allclose(w_audio, G.audio_style(torch.cat([read, z], 1)), atol=1e-6)
    assert a.shape == (3, 16, 8, 8)  # the trunk's map shape, so the audio head is the same either way
    assert torch.allclose(a, G.audio_fc(w_audio).view(3, 16, 8, 8), atol=1e-6)
    # Given the picture and z, the caption changes nothing more about the sound.
    same_picture = G.image_reader.register_forward_pre_hook(lambda module, args: (images.detach(), *args[1:]))
    _, mels_other_caption = G(z, torch.randn(3, COND))
    same_picture.remove()
    assert torch.allclose(mels_other_caption, mels, atol=1e-6)
    # The reading is detached: audio losses never reach the image head.
    G.zero_grad()
    G(z, c)[1].square().sum().backward()
    assert G.to_rgb.weight.grad is None or not G.to_rgb.weight.grad.any()
    assert G.audio_style[0].weight.grad.abs().sum() > 0 and G.image_reader.stem.weight.grad.abs().sum() > 0
    G.save_pretrained(tmp_path)
    G2 = JointGenerator.from_pretrained(tmp_path).eval()
    assert G2.config.audio_source == "image"
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(G2(z, c), (images, mels)))
    with pytest.raises(ValueError, match=r"audio_source must be one of \('trunk', 'image'\), got 'sound'"):
        tiny(audio_source="sound")


def test_sound_of_sounds_out_other_pictures_in_the_same_pass():
    G, _ = tiny(audio_source="image")
    z, c, real = torch.randn(3, 8), torch.randn(3, COND), torch.rand(3, 3, 16, 16) * 2 - 1
    read = []
    G.image_reader.register_forward_pre_hook(lambda module, args: read.append(args[0]))
    images, mels = G(z, c)
    images2, mels2, sounded = G(z, c, sound_of=real)
    assert torch.equal(read[1][3:], real) and sounded.shape == mels.shape
    assert torch.allclose(images2, images) and torch.allclose(mels2, mels, atol=1e-6)  # the fakes' own sounds unchanged
    G.zero_grad()
    sounded.square().sum().backward()  # a loss on the real pictures' sounds trains only the reading and the audio head
    assert G.image_reader.stem.weight.grad.abs().sum() > 0 and G.to_mel.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in [*G.mapping.parameters(), *G.to_rgb.parameters()])
    with pytest.raises(ValueError, match=r"sound_of: expected shape \(3, 3, 16, 16\)"):
        G(z, c, sound_of=real[:2])
    trunk_g, _ = tiny()
    with pytest.raises(ValueError, match="sound_of needs audio_source='image'"):
        trunk_g(z, c, sound_of=real)
