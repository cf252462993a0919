import pytest

from gan.errors import GanError
from gan.training import checkpoint as ckpt


def test_list_resolve_and_prune(tmp_path):
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-40.tmp").mkdir()  # an interrupted save is not a checkpoint
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 10, 30]
    assert ckpt.resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-30"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 30]


def test_resume_errors(tmp_path):
    with pytest.raises(GanError, match="no checkpoint"):
        ckpt.resolve_resume(tmp_path, "latest")
    assert ckpt.resolve_resume(tmp_path, "auto") is None
    with pytest.raises(GanError, match="not a checkpoint folder"):
        ckpt.resolve_resume(tmp_path, str(tmp_path))


def test_replace_dir_keeps_old_until_new_is_in_place(tmp_path):
    final = tmp_path / "generator"
    final.mkdir()
    (final / "w").write_text("old")
    tmp = ckpt.temp_dir_for(final)
    tmp.mkdir()
    (tmp / "w").write_text("new")
    ckpt.replace_dir(tmp, final)
    assert (final / "w").read_text() == "new"
    assert not tmp.exists() and not final.with_name("generator.old").exists()


def test_resume_with_other_models_is_refused_and_other_settings_are_not(tiny_config, one_thread):
    from gan.config import load_config
    from gan.training.trainer import Trainer

    run = Trainer(load_config(tiny_config, ["train.max_steps=2", "train.sample_every=0"])).train()
    saved = (run / "config.toml").read_text()
    with pytest.raises(GanError) as err:
        Trainer(load_config(tiny_config, ["model.cond_norm=true", "model.g_channels=4"]), resume="latest")
    message = str(err.value)
    assert "model.cond_norm: False -> True" in message and "model.g_channels: 8 -> 4" in message
    assert str(run / "config.toml") in message and "train.run_name" in message
    assert (run / "config.toml").read_text() == saved and [s for s, _ in ckpt.list_checkpoints(run)] == [2]
    # the schedule, losses and optimiser may change between legs of a run
    trainer = Trainer(load_config(tiny_config, ["train.max_steps=3", "train.sample_every=0", "optim.g_lr=1e-4",
                                                "loss.mismatch_weight=0.2"]), resume="latest")
    assert trainer.step == 2


def test_architecture_changes_lists_each_changed_field():
    saved = {"task": "joint", "data": {"resolution": 32, "root": "a"}, "model": {"pack": 1},
             "joint": {"n_mels": 64, "pair_weight": 1.0}, "text": {"encoder": "minilm"}}
    current = {"task": "joint", "data": {"resolution": 32, "root": "b"}, "model": {"pack": 2},
               "joint": {"n_mels": 32, "pair_weight": 0.5}, "text": {"encoder": "learned"}}
    assert ckpt.architecture_changes(saved, current) == [
        "text.encoder: 'minilm' -> 'learned'", "model.pack: 1 -> 2", "joint.n_mels: 64 -> 32"]
