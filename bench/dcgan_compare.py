"""Our training step vs the classic PyTorch DCGAN example, and our full trainer vs our bare loop.

(a) classic: the DCGAN example's loop (Sigmoid + BCELoss; D on the real batch, then on
    fake.detach() in a second call, each with its own backward; then the G step).
(b) ours:    the SAME architecture, init, batch and optimiser run through
    gan.training.steps.discriminator_step / generator_step (kind="nonsaturating", i.e.
    BCE-with-logits, no mismatch term, no gradient penalty, no DiffAugment, no autocast), via thin
    adapters that give the DCGAN nets our call signatures. D loses its final Sigmoid: BCE on
    sigmoid outputs and BCE-with-logits are the same loss.
(c) our full trainer (`Trainer(cfg).train()`: accelerate, EMA, non-finite guard, logging, the
    data pipeline) vs a bare loop with the same models, data order and gan.training.steps calls
    (lazy R1 on the same schedule) but no accelerate, EMA or logging. Goal: trainer <= 1.05x.

The one semantic difference between (a) and (b): our D step scores real and fake in ONE D call
(torch.cat of both: one forward per backward, which DistributedDataParallel needs, and the graph
R1 needs), so D's BatchNorm normalises real and fake as one batch of 2B, where the example uses
two batches of B. `--separate-bn` makes the adapter run D's two halves separately (the example's
batch statistics; our step function unchanged). The other difference is a saving, not a change
of maths: our G step freezes D (requires_grad_(False)), so it computes no gradients for D's
weights, which the example computes and then throws away at the next zero_grad. Goal: (b) <= 1.00x (a).

(a) and (b) train separate copies of the same initial nets on one fixed random "real" batch,
in interleaved rounds (a, b, a, b, ...) after warm-up, so drift of the machine hits both alike;
the figure is the median steps/s over rounds. (c) times the steps between the first and the last
logged step of each run (the trainer's stats.jsonl `time` field; the bare loop the same span),
so start-up, the caption cache and the final checkpoint are excluded; runs alternate too.

    .venv/bin/python bench/dcgan_compare.py --data datasets/shapes              # full size, all of it
    .venv/bin/python bench/dcgan_compare.py --skip-trainer                      # (a) vs (b) only
    .venv/bin/python bench/dcgan_compare.py --skip-trainer --separate-bn        # ... with the example's BN batches
    .venv/bin/python bench/dcgan_compare.py --data datasets/shapes --skip-dcgan # (c) only
    .venv/bin/python bench/dcgan_compare.py --quick                             # smoke test, ~10 s

Full size: 64 px, nz 100, ngf = ndf = 64, batch 128, Adam(2e-4, betas (0.5, 0.999)), 6 rounds of
3 steps each after 1 warm-up step (2-4 min on the 2-core CPU); (c) configs/t2i_shapes_wide.toml, 3 runs
each of 250 steps, steps 26..250 timed (about 8 min with start-ups, plus ~30 s for the caption
cache the first time). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/dcgan_compare.py` without an installed package

from gan.training.steps import Condition, discriminator_step, generator_step  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The DCGAN nets (Radford et al. 2016, as in the PyTorch example), for any power-of-two size >= 16


def dcgan_generator(size: int, nz: int, ngf: int, nc: int = 3) -> nn.Sequential:
    """z (B, nz, 1, 1) -> 4x4 -> ... -> (B, nc, size, size); channels halve as the side doubles."""
    n = int(math.log2(size)) - 2  # stride-2 up-convolutions after the 4x4 start (4 at 64 px)
    ch = ngf * 2 ** (n - 1)  # ngf * 8 at 64 px
    layers = [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
    for _ in range(n - 1):
        layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
        ch //= 2
    layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_discriminator(size: int, ndf: int, nc: int = 3) -> nn.Sequential:
    """(B, nc, size, size) -> (B, 1, 1, 1) logits: stride-2 convs down to 4x4, then a 4x4 conv.
    No Sigmoid here: the classic loop appends one, our adapter does not."""
    n = int(math.log2(size)) - 2
    layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]  # no BN on the input layer
    ch = ndf
    for _ in range(n - 1):
        layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
        ch *= 2
    layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
    return nn.Sequential(*layers)


def dcgan_init(m: nn.Module) -> None:
    # The paper's init: convolutions N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class AsOurG(nn.Module):
    """G(z, cond, tokens, mask) as our steps call it; DCGAN is unconditional, so cond is ignored."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z, cond=None, tokens=None, mask=None):
        return self.net(z[:, :, None, None])


class AsOurD(nn.Module):
    """D(images, cond[, mismatch_cond]) -> (N,) logits. With split_at=B, a 2B batch (real + fake
    from discriminator_step) goes through the net as two halves: the example's BatchNorm batches."""

    def __init__(self, net, split_at: int | None = None):
        super().__init__()
        self.net, self.split_at = net, split_at

    def forward(self, images, cond=None, mismatch_cond=None):
        if mismatch_cond is not None:
            raise ValueError("DCGAN has no condition: call discriminator_step with mismatch_weight=0")
        b = self.split_at
        if b is not None and images.shape[0] == 2 * b:
            return torch.cat([self.net(images[:b]), self.net(images[b:])]).flatten()
        return self.net(images).flatten()


# ----------------------------------------------------------------------------------------------
# (a) vs (b)


def dcgan_compare(args) -> dict:
    torch.manual_seed(0)
    G, D = dcgan_generator(args.size, args.nz, args.ngf), dcgan_discriminator(args.size, args.ndf)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    b = args.batch
    real = torch.rand(b, 3, args.size, args.size) * 2 - 1  # one fixed "real" batch: no data loading in either

    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))

    # (a) the classic loop, on its own copy of the nets
    G_a, D_a = copy.deepcopy(G), nn.Sequential(copy.deepcopy(D), nn.Sigmoid())
    opt_ga, opt_da, bce = adam(G_a), adam(D_a), nn.BCELoss()

    def classic_step():
        # D: maximise log D(x) + log(1 - D(G(z))), real and fake in two calls, two backwards
        D_a.zero_grad()
        label = torch.full((b,), 1.0)
        err_real = bce(D_a(real).view(-1), label)
        err_real.backward()
        fake = G_a(torch.randn(b, args.nz, 1, 1))
        label.fill_(0.0)
        err_fake = bce(D_a(fake.detach()).view(-1), label)
        err_fake.backward()
        opt_da.step()
        # G: maximise log D(G(z)); D's weight gradients are computed too, and zeroed next step
        G_a.zero_grad()
        label.fill_(1.0)
        err_g = bce(D_a(fake).view(-1), label)
        err_g.backward()
        opt_ga.step()

    # (b) our step functions, on another copy of the same initial nets
    G_b = AsOurG(copy.deepcopy(G))
    D_b = AsOurD(copy.deepcopy(D), split_at=b if args.separate_bn else None)
    opt_gb, opt_db = adam(G_b), adam(D_b)
    cond = Condition(pooled=torch.zeros(b, 0), tokens=None, mask=None)  # the null condition
    no_autocast = contextlib.nullcontext

    def our_step():
        z = torch.randn(b, args.nz)
        fake = G_b(z, cond.pooled, cond.tokens, cond.mask)
        D_b.requires_grad_(True)
        loss, _ = discriminator_step(D_b, real, fake.detach(), cond, kind="nonsaturating", mismatch_weight=0.0,
                                     gp="none", gp_weight=0.0, apply_gp=False, augment="", autocast=no_autocast)
        loss.backward()
        opt_db.step()
        opt_db.zero_grad(set_to_none=True)
        D_b.requires_grad_(False)
        loss, _ = generator_step(D_b, fake, cond, kind="nonsaturating", augment="", autocast=no_autocast)
        loss.backward()
        opt_gb.step()
        opt_gb.zero_grad(set_to_none=True)

    for _ in range(args.warmup):  # oneDNN picks its kernels on the first calls
        classic_step()
        our_step()
    rates = {"classic": [], "ours": []}
    for _ in range(args.rounds):
        for name, step in (("classic", classic_step), ("ours", our_step)):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps / (time.perf_counter() - t0))
    classic, ours = statistics.median(rates["classic"]), statistics.median(rates["ours"])
    n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    return {"classic": classic, "ours": ours, "ratio": classic / ours, "rates": rates,
            "params_g": n_g, "params_d": n_d}


# ----------------------------------------------------------------------------------------------
# (c) full trainer vs bare loop


def trainer_rate(cfg, first: int) -> float:
    """Run the real trainer; steps/s between logged step `first` and the last step (stats.jsonl)."""
    from gan.training.trainer import Trainer

    run_dir = Trainer(cfg).train()
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    t = {r["step"]: r["time"] for r in rows if "speed/steps_per_s" in r}
    last = cfg.train.max_steps
    return (last - first) / (t[last] - t[first])


class BareLoop:
    """The trainer's image micro-step with plain torch: same dataset, conditions, models, optimiser
    settings, data order and step functions; no accelerate, EMA, guard, logging or progress bar."""

    def __init__(self, cfg):
        from gan.conditioning import build_conditioner
        from gan.data.dataset import ImageTextDataset
        from gan.training.condition_inputs import ConditionInputs

        self.cfg = cfg
        self.dataset = ImageTextDataset(Path(cfg.data.root) / cfg.data.train_split, cfg.data.resolution)
        self.conditioner = build_conditioner(cfg, self.dataset.texts)
        self.cond_inputs = ConditionInputs(cfg, self.dataset, self.conditioner, contextlib.nullcontext, progress=False)

    def rate(self, first: int) -> float:
        from torch.utils.data import DataLoader

        from gan.training.batches import ResumableBatchSampler
        from gan.training.steps import mode_seeking_step
        from gan.training.trainer import build_models, resolve_mixed_precision

        cfg, t, o, l = self.cfg, self.cfg.train, self.cfg.optim, self.cfg.loss
        torch.manual_seed(t.seed)
        conditioner = self.conditioner
        G, D = build_models(cfg, conditioner.cond_dim, conditioner.token_dim)
        if t.channels_last:
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        d_groups = [{"params": D.parameters(), "lr": o.d_lr}]
        if conditioner.trainable:  # as in the trainer: trainable condition modules learn through D
            d_groups.append({"params": conditioner.parameters(), "lr": o.text_lr})
        opt_g = torch.optim.Adam([{"params": G.parameters(), "lr": o.g_lr}], betas=(o.beta1, o.beta2))
        opt_d = torch.optim.Adam(d_groups, betas=(o.beta1, o.beta2))
        precision = resolve_mixed_precision(t.mixed_precision)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        def autocast():
            return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()

        sampler = ResumableBatchSampler(len(self.dataset), t.batch_size, 1, 0, seed=t.seed)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                            generator=torch.Generator().manual_seed(t.seed))
        data = iter(loader)
        t_first = None
        for step in range(t.max_steps):
            batch = next(data)
            real = batch["image"]
            if t.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            emb = conditioner(self.cond_inputs(batch["index"], real, "cpu"))
            cond = Condition(emb.pooled, emb.tokens, emb.mask)
            g_cond = cond.detached() if conditioner.trainable else cond
            z = torch.randn(real.shape[0], cfg.model.z_dim)
            with autocast():
                fake = G(z, g_cond.pooled, g_cond.tokens, g_cond.mask)
            D.requires_grad_(True)
            apply_gp = l.gp != "none" and step % l.gp_every == 0  # the trainer's lazy R1 schedule
            d_loss, _ = discriminator_step(D, real, fake.detach(), cond, kind=l.kind, mismatch_weight=l.mismatch_weight,
                                           gp=l.gp, gp_weight=l.gp_weight * l.gp_every, apply_gp=apply_gp,
                                           augment=l.diffaugment, autocast=autocast)
            d_loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            D.requires_grad_(False)
            g_loss, _ = generator_step(D, fake, g_cond, kind=l.kind, augment=l.diffaugment, autocast=autocast)
            if l.mode_seeking_weight > 0:
                ms, _ = mode_seeking_step(G, fake, z, g_cond, fraction=l.mode_seeking_fraction, autocast=autocast)
                g_loss = g_loss + l.mode_seeking_weight * ms
            g_loss.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            if step + 1 == first:
                t_first = time.perf_counter()
        return (t.max_steps - first) / (time.perf_counter() - t_first)


def trainer_compare(args, data: str, out: Path) -> dict:
    from gan.config import load_config

    base = [f"data.root={data}", f"train.output_dir={out.as_posix()}", f"train.max_steps={args.trainer_steps}",
            f"train.log_every={args.log_every}", "train.sample_every=0", "train.tracker=none",
            f"train.checkpoint_every={10 ** 9}", "train.max_minutes=0", "train.eval_every=0"]
    cfg = load_config(args.config, args.set + base)
    bare = BareLoop(cfg)
    first = args.log_every  # the first logged step: what comes before it is warm-up for both
    rates = {"trainer": [], "bare": []}
    for i in range(args.trainer_rounds):
        run_cfg = load_config(args.config, args.set + base + [f"train.run_name=r{i}"])  # a fresh run folder
        rates["trainer"].append(trainer_rate(run_cfg, first))
        rates["bare"].append(bare.rate(first))
    trainer, bare_rate = statistics.median(rates["trainer"]), statistics.median(rates["bare"])
    return {"trainer": trainer, "bare": bare_rate, "ratio": bare_rate / trainer, "rates": rates,
            "batch": cfg.train.batch_size, "resolution": cfg.data.resolution,
            "timed_steps": args.trainer_steps - first}


# ----------------------------------------------------------------------------------------------

QUICK_SET = ["model.z_dim=16", "model.g_channels=8", "model.g_max_channels=16", "model.d_channels=8",
             "model.d_max_channels=16", "model.attention_resolutions=[8]", "data.resolution=16", "train.batch_size=8"]


def per_run(rates: dict) -> str:
    return "; ".join(f"{name} " + ", ".join(f"{x:.3f}" for x in values) for name, values in rates.items())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each way first")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--separate-bn", action="store_true", help="D's BatchNorm sees real and fake as separate batches")
    p.add_argument("--data", default="datasets/shapes", help="built-in shapes data for (c)")
    p.add_argument("--config", default="configs/t2i_shapes_wide.toml")
    p.add_argument("--set", action="append", default=[], help="config override for (c), repeatable")
    p.add_argument("--trainer-steps", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--trainer-rounds", type=int, default=None, help="runs of each (default 3, --quick 1)")
    p.add_argument("--skip-dcgan", action="store_true")
    p.add_argument("--skip-trainer", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny everything: checks the script, not the speed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="dcgan_compare-") as tmp:
        run(args, Path(tmp))


def run(args, tmp: Path):
    if args.quick:
        args.size, args.nz, args.ngf, args.ndf, args.batch = 16, 16, 8, 8, 8
        args.warmup, args.rounds, args.steps = 1, 2, 2
        args.trainer_steps, args.log_every = 6, 2
        args.set = QUICK_SET + args.set
        from gan.data.shapes import write_shapes

        args.data = str(tmp / "shapes")
        write_shapes(args.data, 16, 0, size=16, seed=0, progress=False)

    args.trainer_rounds = args.trainer_rounds or (1 if args.quick else 3)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    if not args.skip_dcgan:
        r = dcgan_compare(args)
        print(f"\n### DCGAN step: classic example loop vs our step functions\n\n"
              f"{args.size} px, batch {args.batch}, nz {args.nz}, ngf {args.ngf}, ndf {args.ndf}, fp32, "
              f"G {r['params_g'] / 1e6:.2f} M / D {r['params_d'] / 1e6:.2f} M parameters, "
              f"{'separate' if args.separate_bn else 'joint'} real/fake BatchNorm in our D step, "
              f"median of {args.rounds} interleaved rounds of {args.steps} steps\n")
        print("| loop | steps/s | time ratio ours/classic (goal <= 1.00) |\n| --- | --- | --- |")
        print(f"| classic DCGAN example | {r['classic']:.3f} | |")
        print(f"| gan.training.steps | {r['ours']:.3f} | {r['ratio']:.3f} |")
        print(f"\nsteps/s per round: {per_run(r['rates'])}")
    if not args.skip_trainer:
        if not (Path(args.data) / "train" / "metadata.jsonl").is_file():
            sys.exit(f"dcgan_compare.py: {args.data}/train/metadata.jsonl not found; pass --data with the built-in "
                     f"shapes data (`gan data shapes --out datasets/shapes`), or --skip-trainer")
        r = trainer_compare(args, args.data, tmp / "runs")
        print(f"\n### Full trainer vs bare loop ({args.config})\n\n"
              f"{r['resolution']} px, batch {r['batch']}, steps {args.log_every + 1}..{args.trainer_steps} timed "
              f"({r['timed_steps']} steps), median of {args.trainer_rounds} alternating runs each\n")
        print("| loop | steps/s | time ratio trainer/bare (goal <= 1.05) |\n| --- | --- | --- |")
        print(f"| bare loop (gan.training.steps, no accelerate/EMA/logging) | {r['bare']:.3f} | |")
        print(f"| Trainer(cfg).train() | {r['trainer']:.3f} | {r['ratio']:.3f} |")
        print(f"\nsteps/s per run: {per_run(r['rates'])}")


if __name__ == "__main__":
    main()
