"""The trainer in-process on tiny data: the learned encoder, guards (exact resume: test_resume_all_tasks)."""

import json

import pytest
import torch

from gan.config import load_config
from gan.errors import GanError
from gan.sampling import Sampler
from gan.training.trainer import Trainer


def test_learned_text_encoder_trains_and_exports(tiny_config):
    cfg = load_config(tiny_config, ["train.run_name=learned", "text.encoder=learned", "train.sample_every=0"])
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.conditioner.encoder("text").state_dict().items()}
    run_dir = trainer.train()
    after = trainer.conditioner.encoder("text").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained through D's loss
    sampler = Sampler.from_pretrained(run_dir)
    images = sampler.generate(["a small red circle in the center"], num=2)
    assert images.shape == (1, 2, 3, 16, 16) and images.abs().max() <= 1


def test_refuses_to_overwrite_and_reports_missing_data(tiny_config, tmp_path):
    cfg = load_config(tiny_config, ["train.run_name=once", "train.max_steps=1", "train.sample_every=0"])
    Trainer(cfg).train()
    with pytest.raises(GanError, match="already holds checkpoints"):
        Trainer(cfg)
    with pytest.raises(GanError, match=str(tmp_path / "nowhere")):
        Trainer(load_config(tiny_config, [f"data.root={tmp_path / 'nowhere'}"]))


def test_time_budgets_end_the_run_with_a_checkpoint(tiny_config):
    # 1 ms of CPU (or wall) time is spent by the first step: the run stops there, saved, not at step 50.
    for key in ("max_cpu_minutes", "max_minutes"):
        cfg = load_config(tiny_config, [f"train.run_name={key}", "train.max_steps=50", "train.sample_every=0",
                                        f"train.{key}={1e-3 / 60}"])
        run_dir = Trainer(cfg).train()
        assert json.loads((run_dir / "checkpoint-1" / "train_state.json").read_text())["step"] == 1
    with pytest.raises(GanError, match="train.max_cpu_minutes.*>= 0"):
        load_config(tiny_config, ["train.max_cpu_minutes=-1"])


def test_gradient_accumulation_steps_optimizers_once_per_window(tiny_config):
    cfg = load_config(tiny_config, ["train.run_name=accum", "train.grad_accum=2", "train.max_steps=3",
                                    "train.batch_size=4", "train.sample_every=0"])
    trainer = Trainer(cfg)
    run_dir = trainer.train()
    for opt in (trainer.opt_g, trainer.opt_d):
        steps = {int(s["step"]) for s in opt.state_dict()["state"].values()}
        assert steps == {3}  # 6 micro-batches, 3 optimizer steps
    assert trainer.sampler.start == 0 and json.loads((run_dir / "checkpoint-3" / "train_state.json").read_text())["step"] == 3
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["speed/kimg"] == 3 * 2 * 4 / 1000  # samples seen count both micro-batches


def test_periodic_evaluation_and_mode_seeking_are_logged(tiny_config):
    cfg = load_config(tiny_config, ["train.run_name=evals", "train.sample_every=0", "train.eval_every=2",
                                    "train.eval_num=12", 'train.eval_metrics=["fid", "kid", "attr"]',
                                    "loss.mode_seeking_weight=1.0"])
    run_dir = Trainer(cfg).train()
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval/fid"] > 0 and 0 <= r["eval/attr_all_wordings"] <= 1 for r in evals)
    assert "eval/kid" in evals[0] and all(r["loss/mode_seeking"] > 0 for r in rows if "loss/g" in r)


def test_bad_eval_settings_are_config_errors(tiny_config):
    with pytest.raises(GanError, match="train.eval_metrics"):
        load_config(tiny_config, ['train.eval_metrics=["fid", "diversity"]'])
    with pytest.raises(GanError, match="loss.mode_seeking_fraction"):
        load_config(tiny_config, ["loss.mode_seeking_fraction=0"])
