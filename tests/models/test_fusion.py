import itertools

import pytest
import torch

from gan.encoders.base import Embeddings
from gan.errors import GanError
from gan.models.fusion import MODES, ConditionFusion

NAMES = ("text", "audio", "image")
POOLED = (6, 5, 7)
TOKENS = (4, 3, 5)
LENGTHS = (3, 2, 4)
OUT, TOK_OUT, B = 8, 6, 3
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(NAMES, r)]


def tiny(mode="concat", **kw):
    torch.manual_seed(0)
    args = dict(modalities=NAMES, pooled_dims=POOLED, token_dims=TOKENS, mode=mode, out_dim=OUT, token_out_dim=TOK_OUT)
    return ConditionFusion(**{**args, **kw}).eval()


def embeddings(seed=1, batch=B) -> dict[str, Embeddings]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d, dt, length in zip(NAMES, POOLED, TOKENS, LENGTHS):
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0, -1] = False  # some padding
        out[m] = Embeddings(torch.randn(batch, d, generator=g), torch.randn(batch, length, dt, generator=g), mask)
    return out


def null_of(fusion, m, batch=B) -> Embeddings:
    """What the fusion substitutes for an absent modality, as an encoder output."""
    return Embeddings(fusion.null_pooled[m].detach().expand(batch, -1),
                      fusion.null_token[m].detach().expand(batch, 1, -1), torch.ones(batch, 1, dtype=torch.bool))


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_and_subset_gives_the_fused_shapes(mode):
    fusion = tiny(mode)
    full = embeddings()
    for subset in SUBSETS:
        inputs = {m: (full[m] if m in subset else None) for m in NAMES}
        out = fusion(inputs)
        L = sum(LENGTHS[i] if m in subset else 1 for i, m in enumerate(NAMES))
        assert out.pooled.shape == (B, OUT), subset
        assert out.tokens.shape == (B, L, TOK_OUT) and out.mask.shape == (B, L), subset
        assert torch.isfinite(out.pooled).all() and torch.isfinite(out.tokens).all(), subset
    # a single-modality model, and an all-null (unconditional) batch
    single = ConditionFusion(modalities=("audio",), pooled_dims=(5,), token_dims=(3,), mode=mode, out_dim=4,
                             token_out_dim=6)
    assert single({"audio": full["audio"]}).pooled.shape == (B, 4)
    assert fusion({}, batch_size=2).tokens.shape == (2, 3, TOK_OUT)


@pytest.mark.parametrize("mode", MODES)
def test_missing_modality_is_the_learned_null(mode):
    fusion = tiny(mode)
    e = embeddings()
    missing = fusion({"text": e["text"], "audio": None})  # image absent, audio None
    explicit = fusion({"text": e["text"], "audio": null_of(fusion, "audio"), "image": null_of(fusion, "image")})
    assert torch.allclose(missing.pooled, explicit.pooled, atol=1e-6)
    assert torch.allclose(missing.tokens, explicit.tokens, atol=1e-6)
    # not zeros pretending to be data...
    zeros = Embeddings(torch.zeros(B, 5), torch.zeros(B, 1, 3), torch.ones(B, 1, dtype=torch.bool))
    assert not torch.allclose(fusion({"text": e["text"], "audio": zeros}).pooled, missing.pooled, atol=1e-4)
    # ...but a learned parameter: changing it changes the output
    with torch.no_grad():
        fusion.null_pooled["audio"].add_(torch.randn(5))
        fusion.null_token["audio"].add_(torch.randn(3))
    changed = fusion({"text": e["text"]})
    assert not torch.allclose(changed.pooled, missing.pooled, atol=1e-4)
    assert not torch.allclose(changed.tokens, missing.tokens, atol=1e-4)


def test_null_parameters_get_gradients():
    fusion = tiny("gated").train()
    out = fusion({"text": embeddings()["text"]})
    (out.pooled.sum() + out.tokens.sum()).backward()
    assert fusion.null_pooled["image"].grad.abs().sum() > 0 and fusion.null_token["audio"].grad.abs().sum() > 0


def test_weighted_lambdas():
    fusion = tiny("weighted")
    e = embeddings()
    equal = fusion(e)
    tilted = fusion(e, weights={"text": 0.7, "audio": 0.3})
    assert not torch.allclose(equal.pooled, tilted.pooled, atol=1e-4)
    # weights are normalised to sum 1, and unlisted modalities get 0
    assert torch.allclose(fusion(e, weights={"text": 1.4, "audio": 0.6}).pooled, tilted.pooled, atol=1e-6)
    text_only = fusion(e, weights={"text": 1.0, "audio": 0.0})
    assert torch.allclose(text_only.pooled, fusion.pooled_proj["text"](e["text"].pooled), atol=1e-6)
    assert not text_only.mask[:, LENGTHS[0]:].any()  # zero-weight modalities' tokens are masked out
    assert torch.equal(text_only.mask[:, : LENGTHS[0]], e["text"].mask)
    # learned lambdas start equal; fixed ones come from the config
    assert torch.allclose(torch.softmax(fusion.weight_logits, 0), torch.full((3,), 1 / 3))
    fixed = tiny("weighted", weights=(7.0, 3.0, 0.0))
    assert not hasattr(fixed, "weight_logits")
    assert torch.allclose(fixed(e).pooled, fixed(e, weights={"text": 0.7, "audio": 0.3}).pooled, atol=1e-6)
    with pytest.raises(GanError, match="unknown modalities.*video"):
        fusion(e, weights={"video": 1.0})
    with pytest.raises(GanError, match="not all 0"):
        fusion(e, weights={"text": 0.0})
    with pytest.raises(GanError, match="only to mode 'weighted'"):
        tiny("concat")(e, weights={"text": 1.0})


def test_gated_gates_start_at_one_half():
    fusion = tiny("gated")
    e = embeddings()
    expected = sum(0.5 * fusion.pooled_proj[m](e[m].pooled) for m in NAMES)
    assert torch.allclose(fusion(e).pooled, expected, atol=1e-6)


def test_concat_gives_each_modality_its_own_slice():
    fusion = tiny("concat")
    e = embeddings()
    out = fusion(e).pooled
    assert [fusion.pooled_proj[m][1].out_features for m in NAMES] == [3, 3, 2]
    assert torch.allclose(out[:, 3:6], fusion.pooled_proj["audio"](e["audio"].pooled), atol=1e-6)


def test_attention_ignores_masked_tokens():
    fusion = tiny("attention")
    e = embeddings()
    out = fusion(e)
    e["text"].tokens[0, -1] = 100.0  # a padding position of sample 0
    assert torch.allclose(fusion(e).pooled, out.pooled, atol=1e-5)


def real_modalities(out, present) -> torch.Tensor:
    """(B, len(present)) True where the modality kept its real tokens (a dropped one masks all but its null)."""
    starts = torch.tensor([0, *itertools.accumulate(LENGTHS)])
    return torch.stack([out.mask[:, starts[NAMES.index(m)] + 1] for m in present], dim=1)


def test_modality_dropout_only_in_training_seeded_and_keeps_one():
    fusion = tiny("concat", modality_dropout=0.7)
    e = {m: Embeddings(x.pooled, x.tokens, torch.ones_like(x.mask)) for m, x in embeddings(batch=64).items()}
    assert torch.equal(fusion(e).pooled, fusion(e).pooled)  # eval: no dropout
    assert real_modalities(fusion(e), NAMES).all()
    fusion.train()
    torch.manual_seed(5)
    a = fusion(e)
    torch.manual_seed(5)
    b = fusion(e)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.mask, b.mask)
    kept = real_modalities(a, NAMES)  # (64, 3)
    assert kept.any(1).all() and not kept.all()  # some dropped, never all of a sample's
    # a dropped modality is exactly its null: the fused slice equals the projected null
    i, j = (~kept).nonzero()[0].tolist()
    m = NAMES[j]
    start = sum(fusion.pooled_proj[n][1].out_features for n in NAMES[:j])
    null = fusion.pooled_proj[m](fusion.null_pooled[m])  # (slice width,)
    assert torch.allclose(a.pooled[i, start : start + null.shape[0]], null, atol=1e-6)
    # the only present modality is never dropped: audio's 2nd token (after text's null) stays real
    assert fusion({"audio": e["audio"]}).mask[:, 2].all()


def test_save_load_round_trip(tmp_path):
    for mode in ("weighted", "attention"):
        fusion = tiny(mode)
        e = embeddings()
        ref = fusion({"text": e["text"], "image": e["image"]})
        fusion.save_pretrained(tmp_path / mode)
        again = ConditionFusion.from_pretrained(tmp_path / mode).eval()
        out = again({"text": e["text"], "image": e["image"]})
        assert torch.equal(out.pooled, ref.pooled) and torch.equal(out.tokens, ref.tokens)


def test_bad_inputs_are_gan_errors():
    fusion = tiny()
    e = embeddings()
    with pytest.raises(GanError, match="unknown modalities.*video"):
        fusion({"video": e["text"]})
    wrong = Embeddings(torch.randn(B, 9), e["audio"].tokens, e["audio"].mask)
    with pytest.raises(GanError, match=r"'audio'.*pooled_dims\[1\]"):
        fusion({"audio": wrong})
    with pytest.raises(GanError, match=r"'audio'.*expected pooled \(2, 5\)"):  # batch sizes differ
        fusion({"text": embeddings(batch=2)["text"], "audio": e["audio"]})
    with pytest.raises(GanError, match="batch_size"):
        fusion({"text": None})
    with pytest.raises(GanError, match="mode must be one of"):
        ConditionFusion(mode="sum")
    with pytest.raises(GanError, match="token_dims must be 3"):
        ConditionFusion(modalities=NAMES, pooled_dims=POOLED, token_dims=(4,))
    with pytest.raises(GanError, match="one lambda per modality"):
        ConditionFusion(mode="weighted", weights=(0.5, 0.5))


def test_image_encoder_through_fusion_into_the_generator():
    from gan.encoders.image import ImageEncoder
    from gan.models import ConditionalGenerator

    torch.manual_seed(0)
    enc = ImageEncoder(resolution=32, pooled_dim=7, token_dim=5, channels=(4, 4, 8, 8)).eval()
    fusion = tiny("attention")
    G = ConditionalGenerator(resolution=16, z_dim=4, cond_dim=OUT, token_dim=TOK_OUT, base_channels=4,
                             max_channels=8, attention_resolutions=(8,)).eval()
    cond = fusion({"image": enc(torch.rand(2, 3, 32, 32) * 2 - 1), "text": embeddings(batch=2)["text"]})
    assert cond.tokens.shape == (2, LENGTHS[0] + 1 + 16, TOK_OUT)
    assert G(torch.randn(2, 4), cond.pooled, cond.tokens, cond.mask).shape == (2, 3, 16, 16)
