"""A real `python train_gan.py` killed with SIGKILL while it writes a checkpoint, or pre-empted with
SIGTERM: `--resume latest` continues from the last complete checkpoint and the counters continue."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models on a shared 2-core box


def train(config, run_name, *extra):
    return [sys.executable, str(ROOT / "train_gan.py"), "--config", str(config), "--set",
            f"train.run_name={run_name}", "--set", "train.sample_every=0", "--set", "train.tracker=none", *extra]


def finish(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def logged_steps(run):
    return [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]


def _listdir(folder):
    try:
        return os.listdir(folder)
    except FileNotFoundError:  # renamed into place meanwhile
        return []


def kill_during_a_checkpoint_write(config, run_name, cwd, deadline=120.0):
    """Start training with a checkpoint every step; SIGKILL it the moment a checkpoint-N.tmp folder
    holds its first files, after a first complete checkpoint. Returns the run folder if the kill left the .tmp folder behind, else None."""
    run = config.parent / "runs" / run_name
    proc = subprocess.Popen(train(config, run_name, "--set", "train.checkpoint_every=1", "--set",
                                  "train.max_steps=100000", "--set", "train.checkpoints_total_limit=3"),
                            cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.time()
    try:
        while proc.poll() is None and time.time() - start < deadline:
            names = [p.name for p in os.scandir(run)] if run.is_dir() else []
            tmp = [n for n in names if n.endswith(".tmp")]
            if tmp and any(n[11:].isdigit() for n in names) and _listdir(run / tmp[0]):
                proc.send_signal(signal.SIGKILL)  # some files of the new checkpoint are written, not all
                break
            time.sleep(0.0005)
    finally:
        proc.kill()
        proc.wait()
    return run if run.is_dir() and list(run.glob("checkpoint-*.tmp")) else None


def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tiny_config, tmp_path):
    for attempt in range(5):  # the write takes milliseconds: retry if the kill came just after it
        run = kill_during_a_checkpoint_write(tiny_config, f"kill{attempt}", tmp_path)
        if run is not None:
            break
    else:
        pytest.fail("never caught a checkpoint write in progress in 5 tries")
    (partial,) = run.glob("checkpoint-*.tmp")
    assert not (partial / "train_state.json").exists()  # killed half-way through writing it
    last = max(int(p.name[11:]) for p in run.glob("checkpoint-*") if p.name[11:].isdigit())
    assert (run / f"checkpoint-{last}" / "train_state.json").is_file()
    finish(train(tiny_config, run.name, "--resume", "latest", "--max-steps", str(last + 2)), tmp_path)
    assert not list(run.glob("*.tmp"))  # what the kill left was cleaned up
    info = json.loads((run / "run_info.json").read_text())
    assert info["start_step"] == last and info["resumed_from"].endswith(f"checkpoint-{last}")
    assert json.loads((run / f"checkpoint-{last + 2}" / "train_state.json").read_text())["step"] == last + 2
    assert logged_steps(run) == list(range(1, last + 3))  # the steps the kill lost are logged once, again


def test_sigterm_saves_exits_cleanly_and_the_step_counter_continues(tiny_config, tmp_path):
    run = tiny_config.parent / "runs" / "term"
    cmd = train(tiny_config, "term", "--max-steps", "100000", "--set", "train.checkpoint_every=100000")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.time()
        while time.time() - start < 120 and proc.poll() is None:
            if (run / "stats.jsonl").is_file() and len(logged_steps(run)) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    step = json.loads(next(run.glob("checkpoint-*/train_state.json")).read_text())["step"]
    assert step >= 2 and f"stopped by signal {signal.SIGTERM.value} at step {step}" in out
    assert (run / "generator" / "condition.json").is_file()
    finish(train(tiny_config, "term", "--resume", "latest", "--max-steps", str(step + 2)), tmp_path)
    assert logged_steps(run) == list(range(1, step + 3))
    assert json.loads((run / f"checkpoint-{step + 2}" / "train_state.json").read_text())["step"] == step + 2
