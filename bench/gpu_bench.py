"""One prepared GPU benchmark: bf16 training step time, sampling images/s and peak GPU memory.

Cases: the default text-to-image models (configs/t2i_shapes_wide.toml) at 64 and 128 px, and the
joint image + sound models (configs/joint_shapes.toml) at their default size (32 px + 64x64 mel),
each at its config's batch and a 4x larger one. Synthetic data (random images, spectrograms and
caption features: no MiniLM, no data loading), so the figures are the models' own cost.

- training: the trainer's micro-step (G forward; gan.training.steps / joint_steps D step with the
  config's loss, mismatch term, DiffAugment and lazy R1 every `loss.gp_every` steps; G step; Adam)
  under bf16 autocast, channels_last, no EMA or logging; steps/s over `--steps` after `--warmup`.
- sampling: G alone (eval, no_grad, bf16 autocast), output left on the GPU; images/s.
- memory: torch.cuda.max_memory_allocated (and reserved) over each case's training steps, and
  separately over its sampling.

With the `device` tool (an H200 lent to some sessions). Its python3 has torch, accelerate,
safetensors and transformers but not diffusers (our models' ConfigMixin/ModelMixin base), so carry
that pure-Python wheel; this script puts the repo root on sys.path, so `gan` needs no install.
Here, once (the version: `.venv/bin/pip show diffusers`):

    echo /.whl/ >> .git/info/exclude
    .venv/bin/python -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1

then one call:

    run(carry=[".whl"], timeout_s=330, command="python3 -m pip install -q --no-index --no-deps --no-compile
        --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
        PYTHONUNBUFFERED=1 python3 bench/gpu_bench.py --out $OUT --max-seconds 240")

It starts no new case once --max-seconds have passed (a running case stops its timed loop at the
deadline too) and writes what it has: $OUT/gpu_bench.json and $OUT/gpu_bench.md.
Without a CUDA device it exits with status 2 and says so; `--cpu-smoke` runs tiny versions of the
cases on the CPU instead (checks the script, numbers meaningless). Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the gan package, uninstalled on the GPU machine

import torch  # noqa: E402

T2I, JOINT = ROOT / "configs/t2i_shapes_wide.toml", ROOT / "configs/joint_shapes.toml"
SMOKE = {  # --cpu-smoke: tiny models, a couple of steps
    "t2i": ["model.z_dim=16", "model.g_channels=8", "model.g_max_channels=16", "model.d_channels=8",
            "model.d_max_channels=16"],
    "joint": ["model.g_channels=8", "model.d_channels=8", "joint.n_mels=16", "joint.hop_length=1000",
              "joint.audio_channels=4"],
}


class Clock:
    """Wall time that waits for the GPU's queue, and the global deadline."""

    def __init__(self, device, max_seconds: float):
        self.device, self.deadline = device, time.perf_counter() + max_seconds

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def reset_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device) -> dict:
    if device.type != "cuda":
        return {"allocated_mib": None, "reserved_mib": None}
    return {"allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}


def timed(step, clock: Clock, warmup: int, steps: int) -> tuple[float, int]:
    """Calls step(i) warmup + steps times; (steps/s of the timed calls, how many were timed).
    Stops early at the deadline (at least one timed call)."""
    for i in range(warmup):
        step(i)
    t0, n = clock.now(), 0
    while n < steps and (n == 0 or clock.left() > 0):
        step(warmup + n)
        n += 1
    return n / (clock.now() - t0), n


def cond_features(batch: int, device, tokens: bool):
    pooled = torch.nn.functional.normalize(torch.randn(batch, 384, device=device), dim=1)
    if not tokens:
        return pooled, None, None
    mask = torch.zeros(batch, 32, dtype=torch.bool, device=device)
    mask[:, :14] = True  # shapes captions are ~10-14 tokens
    return pooled, torch.randn(batch, 32, 384, device=device), mask


def t2i_case(size: int, batch: int, args, device, clock: Clock) -> dict:
    from gan.config import load_config
    from gan.training.steps import Condition, discriminator_step, generator_step
    from gan.training.trainer import build_models

    cfg = load_config(T2I, args.smoke_set["t2i"] + [f"data.resolution={size}"])
    l, o = cfg.loss, cfg.optim
    torch.manual_seed(0)
    G, D = build_models(cfg, cond_dim=384, token_dim=384)
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=o.g_lr, betas=(o.beta1, o.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.d_lr, betas=(o.beta1, o.beta2))
    real = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
    cond = Condition(*cond_features(batch, device, tokens=True))

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def train_step(i):
        z = torch.randn(batch, cfg.model.z_dim, device=device)
        with autocast():
            fake = G(z, cond.pooled, cond.tokens, cond.mask)
        D.requires_grad_(True)
        loss, _ = discriminator_step(D, real, fake.detach(), cond, kind=l.kind, mismatch_weight=l.mismatch_weight,
                                     gp=l.gp, gp_weight=l.gp_weight * l.gp_every,
                                     apply_gp=l.gp != "none" and i % l.gp_every == 0, augment=l.diffaugment,
                                     autocast=autocast)
        loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        loss, _ = generator_step(D, fake, cond, kind=l.kind, augment=l.diffaugment, autocast=autocast)
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

    def sample(b):
        pooled, tokens, mask = cond_features(b, device, tokens=True)

        def run(_):
            with torch.no_grad(), autocast():
                G(torch.randn(b, cfg.model.z_dim, device=device), pooled, tokens, mask)
        return run

    return run_case(f"text-to-image {size} px", G, D, batch, train_step, sample, args, device, clock)


def joint_case(batch: int, args, device, clock: Clock) -> dict:
    from gan.config import load_config
    from gan.training.joint_steps import (build_joint_models, drop_condition, joint_discriminator_step,
                                          joint_generator_step, mel_settings)

    cfg = load_config(JOINT, args.smoke_set["joint"])
    l, o, j, r = cfg.loss, cfg.optim, cfg.joint, cfg.data.resolution
    torch.manual_seed(0)
    G, D = build_joint_models(cfg, SimpleNamespace(cond_dim=384), mel_settings(cfg))  # MiniLM's width
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=o.g_lr, betas=(o.beta1, o.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.d_lr, betas=(o.beta1, o.beta2))
    cl = torch.channels_last
    real = (torch.rand(batch, 3, r, r, device=device) * 2 - 1).contiguous(memory_format=cl)
    real_mels = (torch.rand(batch, 1, j.n_mels, j.n_mels, device=device) * 2 - 1).contiguous(memory_format=cl)
    pooled, _, _ = cond_features(batch, device, tokens=False)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def train_step(i):
        cond = drop_condition(pooled, j.caption_dropout)
        z = torch.randn(batch, cfg.model.z_dim, device=device)
        with autocast():
            fake, fake_mels = G(z, cond)
        D.requires_grad_(True)
        loss, _ = joint_discriminator_step(
            D, real, real_mels, fake.detach(), fake_mels.detach(), cond, kind=l.kind,
            mismatch_weight=l.mismatch_weight, pair_weight=j.pair_weight, gp_weight=l.gp_weight * l.gp_every,
            apply_gp=l.gp != "none" and i % l.gp_every == 0, augment=l.diffaugment, autocast=autocast)
        loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        loss, _ = joint_generator_step(D, fake, fake_mels, cond, kind=l.kind, augment=l.diffaugment,
                                       autocast=autocast)
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

    def sample(b):
        c, _, _ = cond_features(b, device, tokens=False)

        def run(_):
            with torch.no_grad(), autocast():
                G(torch.randn(b, cfg.model.z_dim, device=device), c)
        return run

    return run_case(f"joint {r} px + {j.n_mels}x{j.n_mels} mel", G, D, batch, train_step, sample, args, device,
                    clock)


def run_case(name, G, D, batch, train_step, sample, args, device, clock: Clock) -> dict:
    out = {"case": name, "batch": batch, "params_g": sum(p.numel() for p in G.parameters()),
           "params_d": sum(p.numel() for p in D.parameters())}
    reset_memory(device)
    rate, n = timed(train_step, clock, args.warmup, args.steps)
    out.update(train_steps_per_s=round(rate, 3), train_ms_per_step=round(1000 / rate, 2),
               train_images_per_s=round(rate * batch, 1), train_steps_timed=n, train_memory=peak_memory(device))
    G.eval()
    out["sampling"] = []
    for b in args.sample_batches:
        if clock.left() <= 0:
            break
        reset_memory(device)
        rate, n = timed(sample(b), clock, args.warmup, args.sample_calls)
        out["sampling"].append({"batch": b, "images_per_s": round(rate * b, 1), "calls_timed": n,
                                "memory": peak_memory(device)})
    return out


def markdown(results: list[dict], header: str) -> str:
    mib = lambda m: "n/a" if m["allocated_mib"] is None else f"{m['allocated_mib']:.0f}"  # noqa: E731
    lines = [header, "", "| case | batch | G / D M params | train steps/s | ms/step | train images/s | "
             "train peak MiB | sampling images/s (batch) | sampling peak MiB |", "|" + " --- |" * 9]
    for r in results:
        s = r["sampling"]
        rates = ", ".join("%.0f (%d)" % (x["images_per_s"], x["batch"]) for x in s)
        lines.append(f"| {r['case']} | {r['batch']} | {r['params_g'] / 1e6:.2f} / {r['params_d'] / 1e6:.2f} | "
                     f"{r['train_steps_per_s']:.2f} | {r['train_ms_per_step']:.1f} | {r['train_images_per_s']:.0f} | "
                     f"{mib(r['train_memory'])} | {rates} | "
                     f"{', '.join(mib(x['memory']) for x in s)} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_bench.json and gpu_bench.md")
    p.add_argument("--max-seconds", type=float, default=240, help="no new case starts after this")
    p.add_argument("--sizes", default="64,128", help="text-to-image sizes")
    p.add_argument("--batch-factors", default="1,4", help="batches: the config's batch times these")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (cuDNN autotuning, allocator)")
    p.add_argument("--sample-batches", default="64,1024")
    p.add_argument("--sample-calls", type=int, default=20)
    p.add_argument("--no-joint", action="store_true")
    p.add_argument("--cpu-smoke", action="store_true", help="no GPU: tiny cases on the CPU, to check the script")
    args = p.parse_args()
    start = time.perf_counter()
    if args.cpu_smoke:
        device = torch.device("cpu")
        args.smoke_set, args.sizes, args.batch_factors, args.sample_batches = SMOKE, "16,32", "1", "4"
        args.steps, args.warmup, args.sample_calls = 2, 1, 2
    elif not torch.cuda.is_available():
        print("gpu_bench.py: no CUDA device found (torch.cuda.is_available() is False). This benchmark needs a "
              "GPU: run it through the device tool, e.g. "
              "run(command=\"python3 bench/gpu_bench.py --out $OUT --max-seconds 240\"), "
              "or pass --cpu-smoke to check the script on the CPU.", file=sys.stderr)
        sys.exit(2)
    else:
        device = torch.device("cuda")
        args.smoke_set = {"t2i": [], "joint": []}
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    args.sample_batches = [int(b) for b in args.sample_batches.split(",")]
    clock = Clock(device, args.max_seconds)
    from gan.config import load_config

    factors = [int(f) for f in args.batch_factors.split(",")]
    b_t2i = 4 if args.cpu_smoke else load_config(T2I).train.batch_size
    b_joint = 4 if args.cpu_smoke else load_config(JOINT).train.batch_size
    cases = [(t2i_case, (int(s), b_t2i * f)) for s in args.sizes.split(",") for f in factors]
    if not args.no_joint:
        cases += [(joint_case, (b_joint * f,)) for f in factors]
    env = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "precision": "bf16 autocast, channels_last",
           "smoke": args.cpu_smoke}
    results, skipped = [], []
    for fn, fargs in cases:
        if clock.left() <= 0:
            skipped.append(f"{fn.__name__}{fargs}")
            continue
        results.append(fn(*fargs, args, device, clock))
        print(json.dumps(results[-1]), flush=True)
    env["wall_s"] = round(time.perf_counter() - start, 1)
    env["skipped_for_time"] = skipped
    header = (f"### GPU: {env['device']} (torch {env['torch']}, CUDA {env['cuda']}), bf16 autocast + channels_last, "
              f"synthetic data, {args.steps} timed steps after {args.warmup}"
              + (f"; skipped for time: {', '.join(skipped)}" if skipped else "")
              + (" (CPU SMOKE TEST: numbers meaningless)" if args.cpu_smoke else ""))
    table = markdown(results, header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps({"env": env, "results": results}, indent=2))
    (out / "gpu_bench.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {out / 'gpu_bench.json'} and {out / 'gpu_bench.md'} in {env['wall_s']} s")


if __name__ == "__main__":
    main()
