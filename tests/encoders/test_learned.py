import json

import pytest
import torch

from gan.encoders import build_text_encoder, load_text_encoder
from gan.encoders.learned import LearnedTextEncoder, build_vocab, tokenize
from gan.errors import GanError

CAPTIONS = [
    "a small red circle in the top left",
    "A large blue square, bottom right!",
    "in the center there is a small green triangle",
]


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return build_text_encoder("learned", texts=CAPTIONS, embed_dim=16, token_dim=12, pooled_dim=10)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A large blue square, bottom-right!") == ["a", "large", "blue", "square", "bottom", "right"]


def test_build_vocab_ids_are_fixed_and_sorted():
    vocab = build_vocab(["b a", "c a"])
    assert vocab == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}
    assert build_vocab(["b a", "c a"], min_count=2) == {"<pad>": 0, "<unk>": 1, "a": 2}
    with pytest.raises(GanError, match="at least 2 time"):
        build_vocab(["x"], min_count=2)


def test_unknown_words_map_to_unk(encoder):
    ids = encoder.token_ids(["a zebra circle", "!!!"])
    v = encoder.vocab
    assert ids[0, :3].tolist() == [v["a"], 1, v["circle"]] and ids[0, 3:].eq(0).all()
    # a prompt with no words still gets one (unknown) token, so it has something to pool
    assert ids[1, 0] == 1 and ids[1, 1:].eq(0).all()


def test_truncates_to_max_length(encoder):
    ids = encoder.token_ids([" ".join(["red"] * 50)])
    assert ids.shape == (1, 32) and ids.ne(0).all()


def test_shapes_and_padding_invariance(encoder):
    encoder.eval()
    out = encoder.encode(CAPTIONS)
    assert out.pooled.shape == (3, 10) and out.tokens.shape == (3, 32, 12) and out.mask.shape == (3, 32)
    assert out.mask.sum(1).tolist() == [8, 6, 9]
    assert out.tokens[1, 6:].abs().sum() == 0
    # packing: a caption's features do not depend on the longer captions batched with it
    alone = encoder.encode(CAPTIONS[1:2])
    assert torch.allclose(alone.pooled, out.pooled[1:2], atol=1e-6)
    assert torch.allclose(alone.tokens, out.tokens[1:2], atol=1e-6)


def test_word_order_matters(encoder):
    out = encoder.encode(["red circle top left", "left top circle red"])
    assert not torch.allclose(out.tokens[0], out.tokens[1])


def test_gradients_flow_in_training_mode(encoder):
    encoder.train()
    assert encoder.trainable
    out = encoder.encode(CAPTIONS[:2])
    (out.pooled.square().sum() + out.tokens.sum()).backward()
    assert encoder.embed.weight.grad.abs().sum() > 0 and encoder.gru.weight_ih_l0.grad.abs().sum() > 0
    # <pad> never receives a gradient, so padding stays a constant zero input
    assert encoder.embed.weight.grad[0].abs().sum() == 0


def test_learns_a_word_distinction(encoder):
    # a few steps of a linear probe on `pooled` separate captions by one word
    texts = ["a red circle", "a blue circle"] * 4
    target = torch.tensor([1.0, -1.0] * 4)
    opt = torch.optim.Adam(encoder.parameters(), lr=0.05)
    for _ in range(30):
        loss = (encoder.encode(texts).pooled[:, 0] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_export_load_round_trip(encoder, tmp_path):
    encoder.eval()
    spec = encoder.export(tmp_path)
    assert spec["type"] == "learned"
    json.dumps(spec)
    assert (tmp_path / "text_encoder" / "vocab.json").is_file()
    assert list((tmp_path / "text_encoder").glob("*.safetensors"))
    again = load_text_encoder(spec, tmp_path)
    assert isinstance(again, LearnedTextEncoder) and again.vocab == encoder.vocab
    texts = CAPTIONS + ["an unseen purple word salad"]
    a, b = encoder.encode(texts), again.encode(texts)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)


def test_load_errors(encoder, tmp_path):
    with pytest.raises(GanError, match="vocab.json"):
        LearnedTextEncoder.load(tmp_path)
    encoder.export(tmp_path)
    (tmp_path / "text_encoder" / "vocab.json").write_text(json.dumps({"<pad>": 0, "a": 1}))
    with pytest.raises(GanError, match="vocab.json"):
        LearnedTextEncoder.load(tmp_path)


def test_needs_training_texts_and_valid_prompts(encoder):
    with pytest.raises(GanError, match="texts="):
        build_text_encoder("learned")
    with pytest.raises(GanError, match="prompt 1"):
        encoder.encode(["red", " "])
