"""Training-step time of a config's models: fp32 vs bf16 autocast + channels_last.

One step = G forward, the D step (real + fake + mismatched captions in one D call, hinge loss)
and the G step, with Adam; no data loading, no EMA, no logging, no R1. Text-to-image configs use
gan.training.steps; joint configs (task = "joint") gan.training.joint_steps, with the re-paired
real rows and random spectrograms of the config's mel size.

    .venv/bin/python bench/step_time.py                      # defaults of configs/t2i_shapes_wide.toml
    .venv/bin/python bench/step_time.py --g-channels 64 --d-channels 64 --steps 10
    .venv/bin/python bench/step_time.py --config configs/t2i_shapes_pack.toml --set model.g_channels=16
    .venv/bin/python bench/step_time.py --config configs/joint_shapes.toml --set joint.audio_channels=8

Prints the CPU's vector extension (bf16 is only fast with AVX-512: gan.precision) and steps/s for
each precision; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from types import SimpleNamespace

import torch

from gan.config import load_config
from gan.precision import cpu_bf16_is_fast
from gan.training.joint_steps import build_joint_models, joint_discriminator_step, joint_generator_step, mel_settings
from gan.training.steps import Condition, discriminator_step, generator_step
from gan.training.trainer import build_models


def bench(cfg, bf16: bool, channels_last: bool, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    joint = cfg.task == "joint"
    if joint:
        settings = mel_settings(cfg)
        G, D = build_joint_models(cfg, SimpleNamespace(cond_dim=384, token_dim=384 if cfg.text.use_tokens else None),
                                  settings)
    else:
        G, D = build_models(cfg, cond_dim=384, token_dim=384)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.0, 0.9))
    r = cfg.data.resolution
    real = torch.rand(batch, 3, r, r) * 2 - 1
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    mask = torch.zeros(batch, 32, dtype=torch.bool)
    mask[:, :14] = True  # shapes captions are ~10-14 tokens
    cond = Condition(torch.nn.functional.normalize(torch.randn(batch, 384), dim=1), torch.randn(batch, 32, 384), mask)
    if joint:
        mels = torch.rand(batch, 1, settings.n_mels, settings.frames) * 2 - 1  # (B, 1, M, M)
        mels = mels.contiguous(memory_format=torch.channels_last) if channels_last else mels
        tokens = (cond.tokens, cond.mask) if cfg.text.use_tokens else (None, None)

    pack = cfg.model.pack

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def joint_step():
        z = torch.randn(batch, cfg.model.z_dim)
        with autocast():
            fake, fake_mels = G(z, cond.pooled, *tokens)
        D.requires_grad_(True)
        loss, _ = joint_discriminator_step(D, real, mels, fake.detach(), fake_mels.detach(), cond.pooled, kind="hinge",
                                           mismatch_weight=0.5, pair_weight=1.0, gp_weight=0.0, apply_gp=False,
                                           augment=cfg.loss.diffaugment, autocast=autocast)
        loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        loss, _ = joint_generator_step(D, fake, fake_mels, cond.pooled, kind="hinge", augment=cfg.loss.diffaugment,
                                       autocast=autocast)
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

    def t2i_step():
        z = torch.randn(batch, cfg.model.z_dim)
        with autocast():
            fake = G(z, cond.pooled, cond.tokens, cond.mask)
        D.requires_grad_(True)
        loss, _ = discriminator_step(D, real, fake.detach(), cond, kind="hinge", mismatch_weight=0.5, gp="none",
                                     gp_weight=0.0, apply_gp=False, augment=cfg.loss.diffaugment, autocast=autocast,
                                     augment_group=pack, pack=pack)
        loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        loss, _ = generator_step(D, fake, cond, kind="hinge", augment=cfg.loss.diffaugment, autocast=autocast,
                                 augment_group=pack, pack=pack)
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)

    step = joint_step if joint else t2i_step
    for _ in range(3):  # warm-up: oneDNN picks kernels on the first calls
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/t2i_shapes_wide.toml")
    p.add_argument("--g-channels", type=int, default=None)
    p.add_argument("--d-channels", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = p.parse_args()
    overrides = [f"model.g_channels={args.g_channels}"] if args.g_channels else []
    overrides += [f"model.d_channels={args.d_channels}"] if args.d_channels else []
    cfg = load_config(args.config, overrides + args.set)
    batch = args.batch or cfg.train.batch_size
    print(f"CPU {torch.backends.cpu.get_cpu_capability()} (oneDNN bf16 kernels: {cpu_bf16_is_fast()}), "
          f"threads {torch.get_num_threads()}, batch {batch}, {cfg.data.resolution} px, G base {cfg.model.g_channels}, "
          f"D base {cfg.model.d_channels}, pack {cfg.model.pack}, augment {cfg.loss.diffaugment!r}"
          + (f", audio base {cfg.joint.audio_channels}, {cfg.joint.n_mels} mel bins" if cfg.task == "joint" else ""))
    for name, bf16, cl in (("fp32", False, False), ("fp32 + channels_last", False, True),
                           ("bf16 + channels_last", True, True)):
        print(f"{name:<22} {bench(cfg, bf16, cl, args.steps, batch):6.2f} steps/s")


if __name__ == "__main__":
    main()
