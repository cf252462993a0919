"""The benchmark scripts run (`--quick`: tiny models and data) and print tables of positive numbers.

Speed is not checked here: the figures of a --quick run mean nothing. gpu_bench.py needs a GPU;
on a machine without one it must refuse clearly, which is all that is tested of it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # each script starts a python with torch (and a few trainer runs): ~10-30 s

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def tables(text: str) -> list[dict]:
    """Markdown tables in `text`: [{"header": [...], "rows": [[cell, ...], ...]}]."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            assert len(block) >= 2 and all(set(c) <= set("-: ") for c in block[1]), f"not a markdown table: {block}"
            out.append({"header": block[0], "rows": block[2:]})
            block = []
    return out


def check_positive(table: dict, min_rows: int) -> None:
    assert len(table["rows"]) >= min_rows, table
    for row in table["rows"]:
        assert len(row) == len(table["header"]), row
        numbers = [float(c) for c in row if NUMBER.match(c)]
        assert numbers and all(x > 0 for x in numbers), row


def test_dcgan_compare_quick():
    proc = run("bench/dcgan_compare.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = tables(proc.stdout)
    assert len(found) == 2, proc.stdout
    dcgan, trainer = found
    for t in found:
        check_positive(t, 2)
    assert dcgan["rows"][0][0].startswith("classic") and "ratio" in dcgan["header"][2]
    assert float(dcgan["rows"][1][2]) > 0 and float(trainer["rows"][1][2]) > 0  # the ratios


def test_throughput_quick():
    proc = run("bench/throughput.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sampling, memory, scaling = tables(proc.stdout)
    check_positive(sampling, 4)  # 2 sizes x 2 precisions
    check_positive(memory, 3)  # one row per task
    assert [r[0] for r in memory["rows"]] == ["text-to-image", "video-repair", "joint"]
    peak = memory["header"].index("peak RSS MiB")
    assert all(float(r[peak]) > 100 for r in memory["rows"])  # torch alone is more than that
    check_positive(scaling, 3)  # sizes at one batch, then batches at one size


def test_gpu_bench_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; gpu_bench.py is run by hand, never by the tests")
    proc = run("bench/gpu_bench.py", "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_eval_time_reports_wall_and_cpu_ratios(tiny_config, tiny_shapes):
    import json

    from gan.config import load_config
    from gan.training.trainer import Trainer

    run_dir = Trainer(load_config(tiny_config, ["train.max_steps=1", "train.sample_every=0",
                                                "train.run_name=eval_time"])).train()
    proc = run("bench/eval_time.py", "--checkpoint", str(run_dir), "--data", str(tiny_shapes / "test"),
               "--num", "8", "--metrics", "fid", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert out["num"] == 8 and out["threads"] == 1
    for key in ("eval_s", "feature_pass_s", "ratio", "eval_cpu_s", "feature_pass_cpu_s", "ratio_cpu"):
        assert out[key] > 0, key
    # the evaluation includes a feature pass over the same 8 images, so it cannot cost less CPU than one
    assert out["ratio_cpu"] == pytest.approx(out["eval_cpu_s"] / out["feature_pass_cpu_s"], rel=0.1)  # rounded to 0.1 s
    assert out["ratio_cpu"] > 0.8


def test_d_position_profile_draws_shapes_where_asked_and_prints_a_table(tiny_config, tmp_path):
    import numpy as np

    from gan.config import load_config
    from gan.metrics.diversity import shape_measurements
    from gan.training.trainer import Trainer

    sys.path.insert(0, str(ROOT / "bench"))
    from d_position_profile import PROMPTS, shifted_shapes

    attrs = PROMPTS[0][0]  # anchor (0.3, 0.3)
    for offset in (-0.08, 0.0, 0.05):
        x = shifted_shapes(attrs, offset, "x", 6, 32, np.random.default_rng(0))
        m = shape_measurements(x)
        assert torch.allclose(m["center_x"], torch.full((6,), 0.3 + offset), atol=0.01), offset
        assert (m["center_y"] - 0.3).abs().max() <= 0.05 + 0.01  # the other axis jitters as in the data
    run_dir = Trainer(load_config(tiny_config, ["train.max_steps=2", "train.sample_every=0",
                                                "train.run_name=profile"])).train()
    proc = run("bench/d_position_profile.py", "--run", str(run_dir), "--points", "3", "--draws", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (table,) = tables(proc.stdout)
    assert table["header"] == ["offset", "offset on x", "offset on y"] and len(table["rows"]) == 3
    assert [r[0] for r in table["rows"]] == ["-0.100", "+0.000", "+0.100"]
    assert all(NUMBER.match(c) for r in table["rows"] for c in r[1:])


def test_step_time_reports_each_precision_with_the_cpu_capability():
    proc = run("bench/step_time.py", "--config", "configs/t2i_shapes_pack.toml", "--steps", "1",
               "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--set", "model.g_max_channels=16",
               "--set", "model.d_max_channels=16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"CPU {torch.backends.cpu.get_cpu_capability()} (oneDNN bf16 kernels:" in lines[0] and "pack 2" in lines[0]
    rates = dict(re.fullmatch(r"(.+?)\s+(\d+\.\d+) steps/s", line).groups() for line in lines[1:])
    assert set(rates) == {"fp32", "fp32 + channels_last", "bf16 + channels_last"}
    assert all(float(v) > 0 for v in rates.values())


def test_step_time_runs_the_joint_step_on_a_joint_config():
    proc = run("bench/step_time.py", "--config", "configs/joint_shapes.toml", "--steps", "1",
               "--set", "model.g_channels=8", "--set", "model.d_channels=8", "--set", "joint.audio_channels=4",
               "--set", "model.g_max_channels=16", "--set", "model.d_max_channels=16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "audio base 4, 64 mel bins" in lines[0]
    rates = dict(re.fullmatch(r"(.+?)\s+(\d+\.\d+) steps/s", line).groups() for line in lines[1:])
    assert set(rates) == {"fp32", "fp32 + channels_last", "bf16 + channels_last"}
    assert all(float(v) > 0 for v in rates.values())


def test_text_ceiling_matches_each_caption_to_its_nearest_training_caption(tiny_shapes, tmp_path):
    from gan.data.shapes import SYNONYMS

    proc = run("bench/text_ceiling.py", "--data", str(tiny_shapes), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    split, words = tables(proc.stdout)
    assert [r[0] for r in split["rows"]] == ["heldout", "seen"]
    assert all(0.0 <= float(v) <= 1.0 for r in split["rows"] for v in r[2:])
    held = [w for classes in SYNONYMS.values() for _, ws in classes.values() for w in ws]
    assert [r[0].split(" (")[0] for r in words["rows"]] == held
    # A split matched against itself finds every caption's own row: all attributes right.
    (tmp_path / "self").mkdir()
    for name in ("train", "test"):
        (tmp_path / "self" / name).symlink_to(tiny_shapes / "train")
    proc = run("bench/text_ceiling.py", "--data", str(tmp_path / "self"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert tables(proc.stdout)[0]["rows"] == [["seen", "64", "1.000", "1.000", "1.000", "1.000", "1.000"]]
    proc = run("bench/text_ceiling.py", "--data", str(tmp_path / "missing"))
    assert proc.returncode != 0 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_mel_inversion_compares_the_solvers_on_real_and_generated_sounds(tiny_config, tiny_shapes):
    from conftest import TASK_OVERRIDES
    from gan.config import load_config
    from gan.training.trainer import Trainer

    run_dir = Trainer(load_config(tiny_config, [*TASK_OVERRIDES["joint"], "train.max_steps=1", "train.sample_every=0",
                                                "train.run_name=mel_inversion"])).train()
    proc = run("bench/mel_inversion.py", "--data", str(tiny_shapes), "--checkpoint", str(run_dir), "--num", "8",
               "--solvers", "kl,lstsq", "--griffin-lim-iters", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (table,) = tables(proc.stdout)
    assert [r[:2] for r in table["rows"]] == [
        ["real", "none (the WAV)"], ["real", "kl"], ["real", "lstsq"],
        ["generated", "none (the spectrogram)"], ["generated", "kl"], ["generated", "lstsq"]]
    error = {(r[0], r[1]): float(r[2]) for r in table["rows"] if NUMBER.match(r[2])}
    assert error[("real", "kl")] < error[("real", "lstsq")]  # the KL fit keeps more of a real sound
    accuracies = [float(c) for r in table["rows"] for c in r[3:8]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    proc = run("bench/mel_inversion.py", "--data", str(tiny_shapes), "--solvers", "kl,nmf")
    assert proc.returncode == 2 and "unknown ['nmf']" in proc.stderr and "Traceback" not in proc.stderr
