"""Exact resume for every task: N steps straight vs N/2, `--resume latest`, N/2 give bitwise the same
G, D and EMA weights and optimizer states (CPU, fixed seed, the default bf16 autocast), and the logged step
and the tracker's step continue instead of restarting."""

import json

import pytest
import torch

from conftest import TASK_OVERRIDES  # tests/ is on sys.path under pytest
from gan.config import load_config
from gan.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# Plus the options that draw from their own orders or RNG: attribute-grouped batches with D's
# minibatch-std layer, and the joint head's near-miss pairs and blended captions (both drawn from the
# global RNG; the blend with G reading the captions' words; the joint D's minibatch std on top).
TASKS = {**TASK_OVERRIDES,
         "text-to-image grouped": ["data.attribute_groups=2", "model.mbstd_group=2", "model.mbstd_spatial=true",
                                   "loss.diffaugment_per_group=true", "loss.diffaugment=translation,cutout"],
         "text-to-image packed": ["data.attribute_groups=2", "model.pack=2", "loss.diffaugment=translation,cutout"],
         "joint near-miss blend": [*TASK_OVERRIDES["joint"], "joint.near_miss_weight=1", "joint.blend_share=0.5",
                                   "joint.free_pair_weight=1", "joint.word_dropout=0.2", "text.use_tokens=true",
                                   "model.mbstd_group=2"],
         "joint sound from picture": [*TASK_OVERRIDES["joint"], "joint.audio_source=image", "joint.sonify_weight=10"]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from gan.data.moving_shapes import write_moving_shapes

    out = tmp_path_factory.mktemp("clips") / "moving"
    write_moving_shapes(out, 4, 2, frames=4, size=16, seed=0, progress=False)
    return out


def tracker_steps(run, tag="loss/d"):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    launches = []  # one event file per launch; names hold whole seconds, so order by the events' own times
    for f in run.glob("logs/**/events.out.tfevents.*"):
        events = list(EventFileLoader(str(f)).Load())
        launches.append((min(e.wall_time for e in events), [e.step for e in events for v in e.summary.value
                                                             if v.tag == tag]))
    return [step for _, steps in sorted(launches) for step in steps]


@pytest.mark.parametrize("task", list(TASKS))
def test_resume_is_exact_and_counters_continue(task, tiny_config, clips, checkpoint_readers):
    base = [*TASKS[task], "train.checkpoint_every=100", "train.sample_every=0"]
    if task == "video-repair":
        base.append(f"data.root={clips}")
    straight = Trainer(load_config(tiny_config, [*base, "train.run_name=straight"])).train()
    Trainer(load_config(tiny_config, [*base, "train.run_name=halves", "train.max_steps=2"])).train()
    halves = Trainer(load_config(tiny_config, [*base, "train.run_name=halves"]), resume="latest").train()

    a, b = straight / "checkpoint-4", halves / "checkpoint-4"
    for read in checkpoint_readers:  # G, D and EMA weights; Adam moments, steps and lrs
        ta, tb = read(a), read(b)
        assert ta.keys() == tb.keys() and len(ta) > 10
        assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []
    assert {f.name for f in b.glob("*.safetensors")} >= {"model.safetensors", "model_1.safetensors", "ema.safetensors"}
    assert json.loads((b / "train_state.json").read_text())["ema"]["step"] == 4
    assert [json.loads(x)["step"] for x in (halves / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert tracker_steps(halves) == [1, 2, 3, 4]  # TensorBoard: one event file per launch, steps continue
    assert json.loads((halves / "run_info.json").read_text())["start_step"] == 2
