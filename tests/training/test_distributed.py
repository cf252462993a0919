"""Each task's real train_gan.py under two CPU processes (gloo): the world size is 2, it trains, the
replicas end identical, and only the main process writes checkpoints, samples and logs."""

import json
import os
import socket
import subprocess

import pytest

from conftest import ROOT, TASK_OVERRIDES


TASKS = TASK_OVERRIDES
PER_PROCESS_BATCH = {"text-to-image": 8, "joint": 8, "video-repair": 2}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from gan.data.moving_shapes import write_moving_shapes

    out = tmp_path_factory.mktemp("clips") / "moving"
    write_moving_shapes(out, 4, 2, frames=4, size=16, seed=0, progress=False)  # 4 clips: one batch of 2 each
    return out


def free_port() -> int:
    with socket.socket() as s:  # other test runs on this box may hold accelerate's default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readable(stderr: str) -> str:
    """The end of a failed launch's stderr without progress bars (the launcher's own traceback is last)."""
    return "\n".join(line for line in stderr.replace("\r", "\n").splitlines() if "it/s" not in line)[-6000:]


def test_the_replica_checksum_sees_one_flipped_bit_and_a_swap():
    import torch

    from gan.training.guards import replica_checksums

    model = torch.nn.Linear(4, 3)
    before = replica_checksums([model])
    with torch.no_grad():
        w = model.weight.view(-1)
        bits = w[5:6].view(torch.int32)
        bits ^= 1  # the lowest mantissa bit of one weight
        assert not torch.equal(replica_checksums([model]), before)
        bits ^= 1
        assert torch.equal(replica_checksums([model]), before)
        w[[0, 1]] = w[[1, 0]].clone()
        assert not torch.equal(replica_checksums([model]), before)


@pytest.mark.slow  # 15-20 s each: two processes start, import torch and train 3 steps
@pytest.mark.parametrize("task", list(TASKS))
def test_two_processes_train_in_step_and_only_the_main_one_writes(task, tiny_config, clips, tmp_path, bin_dir):
    sets = [*TASKS[task], "train.max_steps=3", "train.checkpoint_every=2", "train.sample_every=3",
            "train.checkpoints_total_limit=0", "train.run_name=ddp"]
    if task == "video-repair":
        sets.append(f"data.root={clips}")
    # `--cpu --num_processes 2` would silently start ONE process; this starts two.
    cmd = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "train_gan.py"), "--config", str(tiny_config), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, readable(proc.stderr)
    run = tmp_path / "runs" / "ddp"
    info = json.loads((run / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["task"] == task
    # each process all-gathered a checksum of every bit of G, D, the condition model and the EMA
    assert info["replicas_identical"] is True and info["end_step"] == 3

    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # one writer: no line twice
    assert rows[-1]["speed/kimg"] == 3 * PER_PROCESS_BATCH[task] * 2 / 1000  # both processes' samples count
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoint-2", "checkpoint-3", "config.toml", "generator", "logs", "run_info.json", "samples", "stats.jsonl"])
    expected = {"model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin", "ema.safetensors",
                "train_state.json", "random_states_0.pkl", "random_states_1.pkl"}  # the RNG state of each process
    for step in (2, 3):
        assert {p.name for p in (run / f"checkpoint-{step}").iterdir()} == expected
    assert len(list((run / "logs").glob("*/events.out.tfevents.*"))) == 1  # one tracker
    assert len(list((run / "samples").glob("step-0000003*"))) >= 1
    assert json.loads((run / "generator" / "condition.json").read_text())["step"] == 3
