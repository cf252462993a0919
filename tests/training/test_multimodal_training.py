"""Training and sampling with audio, image and fused conditions on the tiny shapes data."""

import json

import pytest
import torch

from gan.cli import main
from gan.config import load_config
from gan.errors import GanError
from gan.sampling import Sampler
from gan.training.trainer import Trainer

SMALL = ["condition.encoder_width=4", "condition.encoder_dim=16", "condition.fusion_dim=16",
         "condition.fusion_token_dim=16", "train.max_steps=2", "train.sample_every=2", "train.checkpoint_every=2"]


def _train(tiny_config, name, *extra):
    cfg = load_config(tiny_config, [f"train.run_name={name}", "task=conditional-image", *SMALL, *extra])
    trainer = Trainer(cfg)
    trainer.before = {k: v.clone() for k, v in trainer.conditioner.state_dict().items()}
    return trainer, trainer.train()


def test_audio_conditioned_run_trains_exports_and_samples(tiny_config, tiny_shapes, tmp_path, capsys):
    trainer, run = _train(tiny_config, "audio", 'condition.modalities=["audio"]', "train.eval_every=2",
                          'train.eval_metrics=["attr"]', "train.eval_num=8")
    evals = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines() if "eval/attr_all_wordings" in x]
    assert len(evals) == 1 and 0 <= evals[0]["eval/attr_all_wordings"] <= 1  # eval from each row's own clip
    after = trainer.conditioner.state_dict()
    assert any(k.startswith("encoders.audio.") for k in after)  # the scratch encoder trains with the GAN
    assert any(not torch.equal(trainer.before[k], after[k]) for k in after if k.startswith("encoders.audio."))
    spec = json.loads((run / "generator" / "condition.json").read_text())
    assert spec["modalities"] == ["audio"] and spec["encoders"]["audio"]["type"] == "audio"
    assert (run / "samples" / "step-0000002.png").is_file()  # grid from the eval split's clips
    rows = [json.loads(x) for x in (tiny_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    wav = str(tiny_shapes / "test" / rows[0]["audio_file"])
    sampler = Sampler.from_pretrained(run)
    a = sampler.generate_from(sampler.condition(audio=[wav]), num=3, seed=1)
    b = sampler.generate_from(sampler.condition(audio=[wav]), num=3, seed=1)
    assert a.shape == (1, 3, 3, 16, 16) and torch.equal(a, b)
    assert main(["sample", "--checkpoint", str(run), "--audio", wav, "--num", "2", "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").glob("*.png")) == ["0000.png", "0001.png"]
    import numpy as np
    import soundfile as sf

    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([np.sin(np.arange(22050) / 10)] * 2, axis=1) * 0.2, 44100)
    assert main(["sample", "--checkpoint", str(run), "--audio", str(stereo), "--num", "1",
                 "--out", str(tmp_path / "st")]) == 0
    assert "2 channels -> mono, 44100 Hz -> 16000 Hz" in capsys.readouterr().out
    (tmp_path / "empty.wav").write_bytes(b"")
    assert main(["sample", "--checkpoint", str(run), "--audio", str(tmp_path / "empty.wav"),
                 "--out", str(tmp_path / "e")]) == 2
    assert "empty.wav" in capsys.readouterr().err
    with pytest.raises(GanError, match="conditioned on \\['audio'\\]"):
        sampler.condition(texts=["a red circle"])


def test_fused_text_audio_image_run_samples_from_any_subset(tiny_config, tiny_shapes, tmp_path):
    trainer, run = _train(tiny_config, "multi", 'condition.modalities=["text", "audio", "image"]',
                          'condition.fusion="weighted"', "condition.modality_dropout=0.3")
    assert trainer.conditioner.fusion is not None and trainer.conditioner.trainable
    rows = [json.loads(x) for x in (tiny_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    wav, png = (str(tiny_shapes / "test" / rows[0][k]) for k in ("audio_file", "file_name"))
    sampler = Sampler.from_pretrained(run)
    text_only = sampler.generate_from(sampler.condition(texts=[rows[0]["text"]]), num=2)
    both = sampler.generate_from(sampler.condition(texts=[rows[0]["text"]], audio=[wav]), num=2)
    tilted = sampler.generate_from(sampler.condition(texts=[rows[0]["text"]], audio=[wav],
                                                     weights={"text": 0.9, "audio": 0.1}), num=2)
    assert not torch.equal(text_only, both) and not torch.equal(both, tilted)
    out = tmp_path / "mix"
    assert main(["sample", "--checkpoint", str(run), "--prompt", "a red circle", "--prompt", "a blue square",
                 "--audio", wav, "--image", png, "--weights", "text=0.7,audio=0.2,image=0.1", "--num", "2",
                 "--out", str(out)]) == 0
    assert (out / "grid.png").is_file() and len(list(out.glob("*/*.png"))) == 4


def test_image_conditioned_run_and_config_errors(tiny_config, tiny_shapes):
    _, run = _train(tiny_config, "image", 'condition.modalities=["image"]')
    rows = [json.loads(x) for x in (tiny_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    sampler = Sampler.from_pretrained(run)
    images = sampler.generate_from(sampler.condition(images=[str(tiny_shapes / "test" / rows[1]["file_name"])]), 2)
    assert images.shape == (1, 2, 3, 16, 16)
    with pytest.raises(GanError, match="condition.fusion"):
        load_config(tiny_config, ['condition.modalities=["text", "audio"]', 'condition.fusion="none"'])
    with pytest.raises(GanError, match="condition.modalities"):
        load_config(tiny_config, ['condition.modalities=["smell"]'])
