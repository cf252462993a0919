"""`gan align` on the tiny shapes data: the loss falls, retrieval is reported, a text generator takes audio."""

import json

import pytest
import torch

from gan.alignment import align, retrieval
from gan.cli import main
from gan.config import load_config
from gan.errors import GanError
from gan.training.trainer import Trainer


def test_retrieval_counts_same_attribute_captions():
    student = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])  # rows 1 and 2 both retrieve caption 2
    text = torch.eye(3)
    out = retrieval(student, text, keys=torch.tensor([0, 1, 1]))
    assert out["top1_exact_row"] == pytest.approx(2 / 3) and out["top1_same_attributes"] == 1.0
    assert out["chance_same_attributes"] == pytest.approx((1 + 4) / 9)


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_align_lowers_the_loss_and_drives_a_text_generator(modality, tiny_shapes, tiny_config, tmp_path):
    out = tmp_path / f"align_{modality}"
    result = align(str(tiny_shapes / "train"), modality, str(out), test=str(tiny_shapes / "test"), steps=40,
                   batch_size=32, width=4, progress=False)
    losses = [h["loss"] for h in result["loss"]]
    assert losses[-1] < losses[0]
    r = result["test_retrieval"]
    assert r["count"] == 16 and 0 <= r["top1_same_attributes"] <= 1
    assert json.loads((out / "align.json").read_text())["modality"] == modality
    assert (out / "encoder" / "config.json").is_file()

    cfg = load_config(tiny_config, [f"train.run_name=zs_{modality}", "train.max_steps=1", "train.sample_every=0"])
    run = Trainer(cfg).train()
    rows = [json.loads(x) for x in (tiny_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    item = str(tiny_shapes / "test" / rows[0]["audio_file" if modality == "audio" else "file_name"])
    flag = f"--{modality}"
    assert main(["sample", "--checkpoint", str(run), flag, item, f"--{modality}-encoder", str(out / "encoder"),
                 "--num", "2", "--out", str(tmp_path / "zs")]) == 0
    assert len(list((tmp_path / "zs").glob("*.png"))) == 2
    for route in ("caption", "projected"):
        assert main(["sample", "--checkpoint", str(run), flag, item, f"--{modality}-encoder", str(out / "encoder"),
                     "--zero-shot-route", route, "--num", "1", "--out", str(tmp_path / route)]) == 0
        assert len(list((tmp_path / route).glob("*.png"))) == 1
    assert len(json.loads((out / "captions.json").read_text())) == len({r["text"] for r in
                                                                          _rows(tiny_shapes / "train")})
    assert main(["sample", "--checkpoint", str(run), flag, item, "--out", str(tmp_path / "no")]) == 2


def test_caption_subspace_keeps_caption_directions_and_drops_the_rest():
    from gan.conditioning import caption_subspace

    g = torch.Generator().manual_seed(0)
    # captions: unit vectors spread along 3 of 16 dimensions around a shared direction
    base = torch.zeros(16)
    base[0] = 1.0
    offsets = torch.zeros(500, 16)
    offsets[:, 1:4] = 0.5 * torch.randn(500, 3, generator=g)
    captions = torch.nn.functional.normalize(base + offsets, dim=-1)
    sub = caption_subspace(captions)
    assert sub.basis.shape[0] <= 4  # the spread lives in dims 0-3 (dim 0 through the normalisation)
    # a vector off the manifold (dims 5..15) comes back unit-length, with nothing left outside dims 0-3
    v = torch.nn.functional.normalize(captions[:2] + torch.randn(2, 16, generator=g) * torch.arange(16).ge(5), dim=-1)
    p = sub.project(v)
    assert torch.allclose(p.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert p[:, 4:].abs().max() < 1e-4
    # and it lies as far from the mean caption as captions do
    cos = torch.nn.functional.cosine_similarity
    spread = cos(captions, sub.mean[None])
    assert spread.min() - 0.02 <= cos(p, sub.mean[None]).min() and cos(p, sub.mean[None]).max() <= spread.max() + 0.02
    # a caption itself stays close to where it was
    assert torch.nn.functional.cosine_similarity(sub.project(captions[:10]), captions[:10]).min() > 0.9


def _rows(split):
    return [json.loads(x) for x in (split / "metadata.jsonl").read_text().splitlines()]


def test_align_bad_input(tmp_path):
    with pytest.raises(GanError, match="expected a split folder"):
        align(str(tmp_path), "audio", str(tmp_path / "o"))
    with pytest.raises(GanError, match="--modality"):
        align(str(tmp_path), "smell", str(tmp_path / "o"))
