"""The real entry points, as a user runs them: accelerate launch train_gan.py, resume, gan sample."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT

pytestmark = pytest.mark.slow


def run(cmd, cwd, ok=True):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_train_resume_sample(tmp_path, tiny_config, bin_dir):
    launch = [str(bin_dir / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train_gan.py"),
              "--config", str(tiny_config)]
    run(launch, tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    export = run_dir / "generator"
    assert (export / "config.json").is_file() and (export / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((export / "condition.json").read_text())["step"] == 4
    assert [json.loads(l)["step"] for l in (run_dir / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert Image.open(run_dir / "samples" / "step-0000004.png").size[0] > 0

    # A second plain launch must not overwrite the run. (accelerate's launcher adds its own
    # CalledProcessError traceback after ours exits non-zero; none comes from our code.)
    again = run(launch, tmp_path, ok=False)
    assert again.returncode != 0 and "error: " in again.stderr and "--resume latest" in again.stderr
    assert f'File "{ROOT / "gan"}' not in again.stderr and f'{ROOT / "train_gan.py"}", line' not in again.stderr

    # Resume: the step counter and the stats continue, they do not restart.
    run(launch + ["--resume", "latest", "--max-steps", "6"], tmp_path)
    steps = [json.loads(l)["step"] for l in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "checkpoint-6").is_dir() and not (run_dir / "checkpoint-2").exists()  # limit of 2
    assert json.loads((export / "condition.json").read_text())["step"] == 6

    # gan sample from the run folder alone: one prompt -> --num PNGs in --out.
    gan = str(bin_dir / "gan")
    out = tmp_path / "one"
    run([gan, "sample", "--checkpoint", str(run_dir), "--prompt", "a large red circle in the top left",
         "--num", "3", "--out", str(out)], tmp_path)
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["0000.png", "0001.png", "0002.png"]
    assert Image.open(pngs[0]).size == (16, 16)

    # Several prompts from a file: a folder per prompt plus a labelled grid; same seed, same bytes.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na tiny blue square in the center\n\nbig green triangle, lower right\n")
    for name in ("batch", "batch2"):
        run([sys.executable, "-m", "gan", "sample", "--checkpoint", str(export), "--prompt-file", str(prompts),
             "--num", "2", "--seed", "3", "--out", str(tmp_path / name)], tmp_path)
    folders = sorted(p.name for p in (tmp_path / "batch").iterdir() if p.is_dir())
    assert folders == ["00-a-tiny-blue-square-in-the-center", "01-big-green-triangle-lower-right"]
    assert (tmp_path / "batch" / "grid.png").is_file()
    for f in (tmp_path / "batch").rglob("*.png"):
        assert f.read_bytes() == (tmp_path / "batch2" / f.relative_to(tmp_path / "batch")).read_bytes()


def test_user_errors_are_one_clear_line(tmp_path, tiny_config, bin_dir):
    gan = str(bin_dir / "gan")
    cases = [
        ([gan, "sample", "--checkpoint", str(tmp_path), "--prompt", "x"], "not a checkpoint"),
        ([gan, "sample", "--checkpoint", str(tmp_path), "--prompt", "  "], "prompt 1 is empty"),
        ([gan, "train", "--config", str(tiny_config), "--set", "train.max_stepz=3"], "train.max_steps"),
        ([gan, "train", "--config", str(tiny_config), "--set", "data.root=/nonexistent"], "/nonexistent"),
        ([gan, "data", "check", str(tmp_path)], str(tmp_path)),
    ]
    for cmd, expected in cases:
        proc = run(cmd, tmp_path, ok=False)
        assert proc.returncode == 2, (cmd, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (cmd, proc.stderr)
