"""Faults in-process on the tiny text-to-image config: non-finite losses and gradients (stop or skip),
NaN weights never saved, and a disk that fills up while a checkpoint is written."""

import errno
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import _checkpoint_tensors as tensors  # tests/ is on sys.path under pytest
from gan import losses
from gan.config import load_config
from gan.errors import GanError
from gan.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def optimizer(folder, name):
    return torch.load(folder / name, weights_only=True)


def nan_on_calls(monkeypatch, table, calls):
    """Make table["hinge"] return NaN on the given (1-based) calls: one call per D or G step here."""
    original, count = table["hinge"], {"n": 0}

    def loss(*args, **kw):
        count["n"] += 1
        value = original(*args, **kw)
        return value * float("nan") if count["n"] in calls else value

    monkeypatch.setitem(table, "hinge", loss)


def finite_and_equal(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 10
    for k in ta:
        assert torch.isfinite(ta[k]).all() and torch.equal(ta[k], tb[k]), k


def test_stop_names_the_step_the_loss_and_the_last_good_checkpoint(tiny_config, monkeypatch):
    base = ["train.sample_every=0", "train.max_steps=4"]
    ref = Trainer(load_config(tiny_config, [*base, "train.run_name=ref", "train.max_steps=2"])).train()
    nan_on_calls(monkeypatch, losses.G_LOSSES, {3})
    trainer = Trainer(load_config(tiny_config, [*base, "train.run_name=stop"]))
    with pytest.raises(GanError) as info:
        trainer.train()
    run = trainer.run_dir
    message = str(info.value)
    assert "step 3: loss/g is not finite" in message and str(run / "checkpoint-2") in message
    assert "train.on_nonfinite=skip" in message
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    finite_and_equal(run / "checkpoint-2", ref / "checkpoint-2")  # the good checkpoint, untouched
    assert [json.loads(x)["step"] for x in (run / "stats.jsonl").read_text().splitlines()] == [1, 2]


def test_skip_drops_the_step_halves_the_learning_rates_and_logs_it(tiny_config, monkeypatch):
    nan_on_calls(monkeypatch, losses.D_LOSSES, {3})
    cfg = load_config(tiny_config, ["train.run_name=skip", "train.on_nonfinite=skip", "train.sample_every=0",
                                    "train.checkpoint_every=1", "train.checkpoints_total_limit=0"])
    run = Trainer(cfg).train()
    two, three, four = (run / f"checkpoint-{k}" for k in (2, 3, 4))
    a, b = tensors(two), tensors(three)
    for name in ("model.safetensors", "model_1.safetensors"):  # G and D: step 3 was not applied
        keys = [k for k in a if k.startswith(name + "/")]
        assert keys and all(torch.equal(a[k], b[k]) for k in keys), name
    for opt, lr in (("optimizer.bin", 1e-4), ("optimizer_1.bin", 2e-4)):  # G's and D's Adam
        before, after = optimizer(two, opt), optimizer(three, opt)
        assert all(int(s["step"]) == 2 for s in after["state"].values())  # no Adam step either
        assert all(torch.equal(before["state"][i]["exp_avg"], after["state"][i]["exp_avg"]) for i in after["state"])
        assert [g["lr"] for g in after["param_groups"]] == [lr]  # halved from 2e-4 and 4e-4, and saved
        assert [g["lr"] for g in optimizer(four, opt)["param_groups"]] == [lr]
    rows = {json.loads(x)["step"]: json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[3]["nonfinite/skipped"] == 1 and rows[3]["nonfinite/cause"] == "loss/d"
    assert rows[3]["lr/d"] == 2e-4 and rows[3]["lr/g"] == 1e-4 and "loss/d" not in rows[3]
    assert math.isfinite(rows[4]["loss/d"])
    assert all(torch.isfinite(v).all() for v in tensors(four).values())
    assert not torch.equal(tensors(four)["model_1.safetensors/" + next(iter(load_file(two / "model_1.safetensors")))],
                           b["model_1.safetensors/" + next(iter(load_file(two / "model_1.safetensors")))])
    assert json.loads((four / "train_state.json").read_text())["nonfinite"] == {"skipped": 1, "consecutive": 0}


def test_skip_stops_after_too_many_dropped_steps_in_a_row(tiny_config, monkeypatch):
    nan_on_calls(monkeypatch, losses.D_LOSSES, set(range(2, 100)))
    cfg = load_config(tiny_config, ["train.run_name=skips", "train.on_nonfinite=skip", "train.sample_every=0",
                                    "train.checkpoint_every=1", "train.max_nonfinite_skips=2"])
    trainer = Trainer(cfg)
    with pytest.raises(GanError, match=r"step 3: loss/d was not finite in 2 steps in a row "
                                       r"\(train.max_nonfinite_skips = 2\)") as info:
        trainer.train()
    assert str(trainer.run_dir / "checkpoint-2") in str(info.value)


def test_a_non_finite_gradient_is_named_and_nan_weights_are_never_saved(tiny_config):
    trainer = Trainer(load_config(tiny_config, ["train.run_name=grad", "train.sample_every=0"]))
    weight = next(trainer.accelerator.unwrap_model(trainer.D).parameters())
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 2 else grad

    handle = weight.register_hook(poison)
    with pytest.raises(GanError, match="step 2: grad_norm/d is not finite; stopped before applying it"):
        trainer.train()
    handle.remove()
    assert all(torch.isfinite(p).all() for p in trainer.D.parameters())  # the update was not applied
    with torch.no_grad():
        weight.fill_(float("nan"))
    with pytest.raises(GanError, match="refusing to write checkpoint-1: D has non-finite values"):
        trainer._save()
    assert not any(p.name.startswith("checkpoint") for p in trainer.run_dir.iterdir())


@pytest.mark.parametrize("where", ["save_state", "ema"])
def test_disk_full_keeps_the_previous_checkpoint_and_resume_works(tiny_config, monkeypatch, where):
    cfg = load_config(tiny_config, [f"train.run_name=full-{where}", "train.sample_every=0"])
    trainer = Trainer(cfg)
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "save_state":
        original, count = trainer.accelerator.save_state, {"n": 0}

        def save_state(folder):
            count["n"] += 1
            original(folder)  # a partial folder is on disk when the error comes
            if count["n"] == 2:
                raise full

        trainer.accelerator.save_state = save_state
    else:
        import safetensors.torch

        original, count = safetensors.torch.save_file, {"n": 0}

        def save_file(*args, **kw):
            count["n"] += 1
            original(*args, **kw)
            if count["n"] == 2:
                raise full

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    with pytest.raises(GanError) as info:
        trainer.train()
    run = trainer.run_dir
    message = str(info.value)
    assert "step 4: disk full/IO error while writing checkpoint-4: [Errno 28] No space left on device" in message
    assert f"the previous checkpoint {run / 'checkpoint-2'} is intact" in message
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    assert all(torch.isfinite(v).all() for v in tensors(run / "checkpoint-2").values())
    monkeypatch.undo()
    Trainer(cfg, resume="latest").train()
    assert json.loads((run / "checkpoint-4" / "train_state.json").read_text())["step"] == 4
    assert [json.loads(x)["step"] for x in (run / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
