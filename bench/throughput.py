"""Sampling throughput, peak memory of each task's training, and step time vs image size and batch.

(i)   images/s of the default text-to-image generator (configs/t2i_shapes_wide.toml, random weights:
      the same work as trained ones) at 32 and 64 px, fp32 and bf16 autocast, batches of 64,
      through `gan.sampling.Sampler.generate_from` (what `gan sample` runs after encoding its
      prompt; the one MiniLM call per prompt is left out), one random caption condition.
(ii)  peak memory (max RSS from resource.getrusage) of a few `Trainer(cfg).train()` steps of each
      task's default config, each in a fresh subprocess, on small generated data at the config's
      resolution, with G's and D's parameter counts. The peak covers the whole run: imports,
      MiniLM and the caption cache, the data, the steps and the final checkpoint + export. The
      data is small (256 rows), so the preloaded dataset of a full-size run is not in it
      (20,000 rows x 3 x 32 x 32 B = 61 MB for the built-in shapes).
(iii) training steps/s of the default text-to-image models vs image size (16, 32, 64 px, batch
      64) and vs batch (16, 32, 64, 128 at 32 px), bf16 autocast + channels_last (the CPU
      default), measured by bench/step_time.py's `bench` (models only: no data, EMA or logging).

    .venv/bin/python bench/throughput.py                       # everything, full size
    .venv/bin/python bench/throughput.py --only sampling       # or: memory, scaling
    .venv/bin/python bench/throughput.py --fp32-scaling        # (iii) in fp32 too
    .venv/bin/python bench/throughput.py --quick               # smoke test: tiny models and data

Prints one markdown table per part (about 2 minutes at full size on the 2-core CPU: (i) ~15 s,
(ii) ~1 min, (iii) ~40 s; --quick ~20 s). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the gan package, and step_time.py beside this file

import torch  # noqa: E402

TASKS = {  # task -> default config
    "text-to-image": "configs/t2i_shapes_wide.toml",
    "video-repair": "configs/repair_moving_shapes.toml",
    "joint": "configs/joint_shapes.toml",
}
T2I = TASKS["text-to-image"]
TINY_T2I = ["model.z_dim=16", "model.g_channels=8", "model.g_max_channels=16", "model.d_channels=8",
            "model.d_max_channels=16", "model.attention_resolutions=[8]"]
QUICK_MEMORY = {  # --quick: models and batches that run in a second or two
    "text-to-image": TINY_T2I + ["data.resolution=16", "train.batch_size=8"],
    "video-repair": ["data.resolution=16", "model.g_channels=4", "model.d_channels=4", "repair.frames=4",
                     "train.batch_size=2"],
    "joint": ["data.resolution=16", "model.g_channels=8", "model.d_channels=8", "joint.n_mels=16",
              "joint.hop_length=1000", "joint.audio_channels=4", "train.batch_size=8"],
}


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# -- (i) sampling ----------------------------------------------------------------------------------


def sampling(args) -> str:
    from gan.config import load_config
    from gan.encoders.base import TextEmbeddings
    from gan.sampling import Sampler
    from gan.training.trainer import build_models

    rows = []
    for size in args.sample_sizes:
        cfg = load_config(T2I, args.tiny + [f"data.resolution={size}"])
        torch.manual_seed(0)
        G, _ = build_models(cfg, cond_dim=384, token_dim=384)
        sampler = Sampler(G, conditioner=None)  # conditions come ready-made: no MiniLM
        mask = torch.zeros(1, 32, dtype=torch.bool)
        mask[:, :14] = True  # shapes captions are ~10-14 tokens
        emb = TextEmbeddings(torch.nn.functional.normalize(torch.randn(1, 384), dim=1), torch.randn(1, 32, 384), mask)
        for name, ctx in (("fp32", contextlib.nullcontext), ("bf16 autocast", bf16_autocast)):
            with ctx():
                sampler.generate_from(emb, args.sample_batch, batch_size=args.sample_batch)  # warm-up
                t0 = time.perf_counter()
                sampler.generate_from(emb, args.sample_num, batch_size=args.sample_batch)
                rate = args.sample_num / (time.perf_counter() - t0)
            rows.append([f"{size} px", name, f"{rate:.1f}", f"{1000 * args.sample_batch / rate:.0f}"])
    n_params = sum(p.numel() for p in G.parameters())
    return (f"### (i) Sampling throughput, text-to-image generator ({T2I}, random weights, "
            f"{n_params / 1e6:.2f} M parameters at {args.sample_sizes[-1]} px), Sampler.generate_from, "
            f"batch {args.sample_batch}, {args.sample_num} images timed\n\n"
            + markdown(["size", "precision", "images/s", f"ms per batch of {args.sample_batch}"], rows))


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# -- (ii) peak memory --------------------------------------------------------------------------------


def rss_mib() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mib()


def peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def memory_child(config: str, overrides: list[str]) -> None:
    """In a fresh process: a few training steps; prints one JSON line."""
    start = rss_mib()
    from gan.config import load_config
    from gan.training.trainer import Trainer

    after_imports = rss_mib()
    cfg = load_config(config, overrides)
    trainer = Trainer(cfg)
    unwrap = trainer.accelerator.unwrap_model
    n_g, n_d = (sum(p.numel() for p in unwrap(m).parameters()) for m in (trainer.G, trainer.D))
    t0 = time.perf_counter()
    trainer.train()
    print(json.dumps({"start_mib": start, "imports_mib": after_imports, "peak_mib": peak_mib(), "params_g": n_g,
                      "params_d": n_d, "batch": cfg.train.batch_size, "resolution": cfg.data.resolution,
                      "steps": cfg.train.max_steps, "train_s": time.perf_counter() - t0}))


def memory(args, tmp: Path) -> str:
    from gan.data.moving_shapes import write_moving_shapes
    from gan.data.shapes import write_shapes

    size = 16 if args.quick else 32  # the configs' resolution
    runs = {}
    for task, config in TASKS.items():
        data = tmp / task  # one data folder per task: each child builds its own caption cache
        if task == "video-repair":
            write_moving_shapes(data, args.rows, 0, frames=4 if args.quick else 8, size=size, progress=False)
        else:
            write_shapes(data, args.rows, 0, size=size, progress=False)
        overrides = (QUICK_MEMORY[task] if args.quick else []) + [
            f"data.root={data.as_posix()}", f"train.output_dir={(tmp / 'runs').as_posix()}",
            f"train.max_steps={args.memory_steps}", f"train.log_every={args.memory_steps}", "train.sample_every=0",
            "train.tracker=none", f"train.checkpoint_every={10 ** 9}", "train.max_minutes=0"]
        cmd = [sys.executable, __file__, "--memory-child", config, *[a for o in overrides for a in ("--set", o)]]
        runs[task] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent)
        if not args.quick:  # one at a time; --quick overlaps them (each child's own peak is unaffected)
            runs[task].wait()
    rows = []
    for task, proc in runs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"throughput.py: the {task} memory run failed:\n{err[-3000:]}")
        r = json.loads(out.strip().splitlines()[-1])
        rows.append([task, f"`{TASKS[task]}`", f"{r['resolution']} px", r["batch"], f"{r['params_g'] / 1e6:.3f}",
                     f"{r['params_d'] / 1e6:.3f}", f"{r['imports_mib']:.0f}", f"{r['peak_mib']:.0f}"])
    return (f"### (ii) Peak memory of {args.memory_steps} training steps per task (Trainer, fresh process each, "
            f"{args.rows}-row generated data)\n\n"
            + markdown(["task", "config", "size", "batch", "G M params", "D M params", "RSS after imports MiB",
                        "peak RSS MiB"], rows))


# -- (iii) step time vs size and batch ---------------------------------------------------------------


def scaling(args) -> str:
    from gan.config import load_config
    from step_time import bench  # bench/step_time.py: G forward + D step + G step with Adam

    precisions = [("bf16 + channels_last", True, True)] + ([("fp32", False, False)] if args.fp32_scaling else [])
    cells = [(s, args.scale_batch) for s in args.scale_sizes] + [(args.scale_size, b) for b in args.scale_batches]
    rows, seen = [], set()
    for size, batch in cells:
        if (size, batch) in seen:  # the 32 px / batch 64 cell is in both sweeps
            continue
        seen.add((size, batch))
        cfg = load_config(T2I, args.tiny + [f"data.resolution={size}"])
        for name, bf16, cl in precisions:
            rate = bench(cfg, bf16, cl, args.scale_steps, batch)
            rows.append([f"{size} px", batch, name, f"{rate:.3f}", f"{1000 / rate:.0f}", f"{rate * batch:.0f}"])
    return (f"### (iii) Training step time vs image size and batch, default text-to-image models "
            f"(bench/step_time.py `bench`, {args.scale_steps} timed steps after 3 warm-up)\n\n"
            + markdown(["size", "batch", "precision", "steps/s", "ms/step", "images/s"], rows))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["sampling", "memory", "scaling"], action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--sample-num", type=int, default=640)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--rows", type=int, default=256, help="rows of generated training data for (ii)")
    p.add_argument("--memory-steps", type=int, default=10)
    p.add_argument("--scale-steps", type=int, default=10)
    p.add_argument("--fp32-scaling", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny models, data and sizes: checks the script only")
    p.add_argument("--memory-child", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child, args.set)
    args.tiny, args.sample_sizes = [], [32, 64]
    args.scale_sizes, args.scale_batches, args.scale_size, args.scale_batch = [16, 32, 64], [16, 32, 64, 128], 32, 64
    if args.quick:
        args.tiny, args.sample_sizes, args.sample_num, args.sample_batch = TINY_T2I, [16, 32], 16, 8
        args.rows, args.memory_steps, args.scale_steps = 16, 2, 2
        args.scale_sizes, args.scale_batches, args.scale_size, args.scale_batch = [16, 32], [4, 8], 16, 8
        if not args.threads:
            torch.set_num_threads(1)
            os.environ["OMP_NUM_THREADS"] = "1"  # the memory children too
    parts = args.only or ["sampling", "memory", "scaling"]
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}" + (", --quick" if args.quick else ""))
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        for part in parts:
            t0 = time.perf_counter()
            table = {"sampling": lambda: sampling(args), "memory": lambda: memory(args, Path(tmp)),
                     "scaling": lambda: scaling(args)}[part]()
            print(f"\n{table}\n\n({part}: {time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
