"""The Accelerate trainer for conditional GANs.

Shape of the run (as in diffusers' training scripts): build → `Accelerator` → `prepare` →
loop under `accumulate` → checkpoint with `save_state` → export the EMA generator.
The loss maths lives in `gan.losses` (via `gan.training.steps`); this file only schedules it.
"""

from __future__ import annotations

import json
import signal
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gan.config import Config, to_dict, to_toml
from gan.data.bad_samples import BadSamplePolicy
from gan.data.dataset import ImageTextDataset
from gan.conditioning import build_conditioner
from gan.errors import GanError
from gan.models.discriminator import ProjectionDiscriminator
from gan.models.ema import EMA
from gan.models.generator import ConditionalGenerator
from gan.precision import auto_mixed_precision
from gan.sampling import CONDITION_FILE, Sampler, labelled_grid
from gan.training import checkpoint as ckpt
from gan.training.condition_inputs import ConditionInputs
from gan.training.batches import ResumableBatchSampler
from gan.training.guards import NonFiniteGuard, replicas_identical
from gan.training.steps import Condition, image_micro_step


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return auto_mixed_precision()  # bf16 only where the hardware runs it fast (gan.precision)


def build_models(cfg: Config, cond_dim: int, token_dim: int | None):
    m, r = cfg.model, cfg.data.resolution
    G = ConditionalGenerator(
        resolution=r, z_dim=m.z_dim, cond_dim=cond_dim, token_dim=token_dim,
        base_channels=m.g_channels, max_channels=m.g_max_channels,
        attention_resolutions=tuple(m.attention_resolutions) if token_dim else (), cond_norm=m.cond_norm,
        upsample=m.upsample)
    D = ProjectionDiscriminator(
        resolution=r, cond_dim=cond_dim, in_channels=3 * m.pack,  # PacGAN: a pack of images stacked on channels
        base_channels=m.d_channels, max_channels=m.d_max_channels,
        spectral_norm=m.spectral_norm, cond_norm=m.cond_norm, mbstd_group=m.mbstd_group,
        mbstd_spatial=m.mbstd_spatial)
    return G, D


class Trainer:
    def __init__(self, cfg: Config, resume: str | None = None):
        self.cfg = cfg
        t = cfg.train
        self.run_dir = Path(t.output_dir) / (t.run_name or cfg.name)
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(t.mixed_precision),
            gradient_accumulation_steps=t.grad_accum,
            log_with="tensorboard" if t.tracker == "tensorboard" else None,
            project_dir=str(self.run_dir / "logs"),
            # No buffers to sync, and D is called outside DDP in the G step (see generator_step).
            # With several modalities, a batch may not use every fusion parameter (a modality's
            # learned null only when it is dropped), which DDP must be told to expect.
            kwargs_handlers=[DistributedDataParallelKwargs(
                broadcast_buffers=False, find_unused_parameters=len(cfg.condition.modalities) > 1)],
        )
        self.resume_from = ckpt.resolve_resume(self.run_dir, resume)
        if self.resume_from is not None:
            ckpt.check_resume_config(self.resume_from.parent, to_dict(cfg))
        if self.resume_from is None and ckpt.list_checkpoints(self.run_dir):
            raise GanError(
                f"{self.run_dir} already holds checkpoints; continue it with --resume latest, or choose "
                f"another folder with --set train.run_name=NAME (nothing was overwritten)")
        set_seed(t.seed)
        self._build()

    # -- set-up ---------------------------------------------------------------------------
    def _build(self):
        cfg, acc = self.cfg, self.accelerator
        root = Path(cfg.data.root)
        split = root / cfg.data.train_split
        self.repair = cfg.task == "video-repair"
        self.joint = cfg.task == "joint"
        if self.repair:
            from gan.data.clips import ClipDataset
            from gan.training.repair_steps import build_repair_models

            self.dataset = ClipDataset(split, size=cfg.data.resolution, bad_samples=BadSamplePolicy.from_config(
                cfg, self.run_dir, acc.is_main_process))
            self.conditioner = None
            if cfg.repair.conditioned:  # the clip's caption and/or audio track, through the fusion module
                self.conditioner = build_conditioner(cfg, self.dataset.texts)
                self.cond_inputs = ConditionInputs(cfg, self.dataset, self.conditioner, acc.main_process_first,
                                                   progress=acc.is_main_process)
            G, D = build_repair_models(cfg, self.conditioner.cond_dim if self.conditioner is not None else None)
            self.perceptual = None
            if cfg.repair.perceptual_weight > 0:
                from gan.repair.losses import VGGPerceptual

                self.perceptual = VGGPerceptual(cfg.repair.vgg_weights).to(acc.device)
        else:
            self.dataset = ImageTextDataset(split, cfg.data.resolution, bad_samples=BadSamplePolicy.from_config(
                cfg, self.run_dir, acc.is_main_process))
            self.conditioner = None
            if not self.joint or cfg.joint.conditioned:
                self.conditioner = build_conditioner(cfg, self.dataset.texts)
                self.cond_inputs = ConditionInputs(cfg, self.dataset, self.conditioner, acc.main_process_first,
                                                   progress=acc.is_main_process)
            if self.joint:
                from gan.training.joint_steps import build_joint_models, joint_audio

                self.mel_settings, self.audio_bank = joint_audio(cfg, self.dataset, acc.main_process_first,
                                                                 progress=acc.is_main_process)
                G, D = build_joint_models(cfg, self.conditioner, self.mel_settings)
                if cfg.joint.near_miss_weight > 0:
                    from gan.data.attribute_index import AttributeIndex

                    self.attribute_index = AttributeIndex(self.dataset.rows, "joint.near_miss_weight")
            else:
                G, D = build_models(cfg, self.conditioner.cond_dim, self.conditioner.token_dim)
        if cfg.train.channels_last and not self.repair:
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        o = cfg.optim
        betas = (o.beta1, o.beta2)
        d_groups = [{"params": D.parameters(), "lr": o.d_lr}]
        g_groups = [{"params": G.parameters(), "lr": o.g_lr}]
        trainable_condition = self.conditioner is not None and self.conditioner.trainable
        if trainable_condition and not self.repair:
            # Trainable condition modules (learned/scratch encoders, fusion) learn through D's loss
            # (matched vs mismatched pairs); G sees their output detached, so G cannot shape the
            # condition to fool D.
            d_groups.append({"params": self.conditioner.parameters(), "lr": o.text_lr})
        elif trainable_condition:
            # Repair's D is not conditional: the condition helps G reconstruct, so it learns with G.
            g_groups.append({"params": self.conditioner.parameters(), "lr": o.text_lr})
        opt_g = torch.optim.Adam(g_groups, betas=betas)
        opt_d = torch.optim.Adam(d_groups, betas=betas)
        self.ema = EMA(G, decay=cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        if trainable_condition:
            # Called through its (possibly DDP-wrapped) forward so its gradients are all-reduced.
            G, D, self.cond_model, opt_g, opt_d = acc.prepare(G, D, self.conditioner, opt_g, opt_d)
        else:
            G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
            self.cond_model = self.conditioner
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        if self.ema is not None:
            self.ema.model.to(acc.device)
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.guard = NonFiniteGuard(cfg.train.on_nonfinite, cfg.train.max_nonfinite_skips, acc, [opt_d, opt_g],
                                    lambda: self.last_checkpoint)
        if self.resume_from is not None:
            self._load(self.resume_from)
        order = None
        if cfg.data.attribute_groups:
            from gan.data.attribute_index import AttributeIndex

            index = AttributeIndex(self.dataset.rows, "data.attribute_groups")
            order = partial(index.grouped_order, cfg.data.attribute_groups)
        self.sampler = ResumableBatchSampler(
            len(self.dataset), cfg.train.batch_size, acc.num_processes, acc.process_index,
            seed=cfg.train.seed, start=self.step * cfg.train.grad_accum, order=order)
        # Its own generator: creating the iterator draws a worker seed, which must not come from
        # the global RNG that a resumed run has just restored.
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=cfg.data.num_workers,
                                 pin_memory=acc.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(cfg.train.seed))
        self.grid_rows, self.grid_folder = ([], None) if self.repair else self._grid_rows()
        self.periodic_eval = None
        if cfg.train.eval_every:
            from gan.training.periodic_eval import PeriodicEval

            self.periodic_eval = PeriodicEval(cfg, acc.device, progress=acc.is_main_process)

    def _grid_rows(self) -> tuple[list[dict], Path]:
        """The fixed conditions of the sample grids: configured prompts, or the first 8 distinct
        captions of the eval split (with their audio and image files, for other modalities)."""
        from gan.data.metadata import read_metadata

        if self.cfg.train.sample_prompts:
            return [{"text": t} for t in self.cfg.train.sample_prompts], Path(".")
        split = Path(self.cfg.data.root) / self.cfg.data.eval_split
        rows = read_metadata(split) if (split / "metadata.jsonl").is_file() else self.dataset.rows
        folder = split if (split / "metadata.jsonl").is_file() else self.dataset.split_dir
        distinct = {}
        for r in rows:
            distinct.setdefault(r["text"], r)
        return list(distinct.values())[:8], folder

    # -- conditions -----------------------------------------------------------------------
    def _condition(self, index: torch.Tensor, real: torch.Tensor) -> Condition:
        emb = self.cond_model(self.cond_inputs(index, real, self.accelerator.device))
        return Condition(emb.pooled, emb.tokens, emb.mask)

    # -- checkpoints ----------------------------------------------------------------------
    def _save(self):
        self.last_checkpoint = ckpt.save_checkpoint(self)

    def _any_process(self, local: bool) -> bool:
        """Whether `local` holds on any process: decisions that every process must take together."""
        if self.accelerator.num_processes == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _load(self, folder: Path):
        self.accelerator.load_state(str(folder))
        state = ckpt.read_train_state(folder)
        self.step = int(state["step"])
        self.last_checkpoint = folder
        if "nonfinite" in state:  # (absent from checkpoints written before the guard existed)
            self.guard.load_state_dict(state["nonfinite"])
        if self.ema is not None:
            ema_file = folder / "ema.safetensors"
            if not ema_file.is_file():
                raise GanError(f"{folder}: missing ema.safetensors; this checkpoint cannot be resumed with EMA")
            tensors = load_file(str(ema_file), device=str(self.accelerator.device))
            self.ema.load_state_dict({**state["ema"], "model": tensors})

    def export(self):
        """Write generator/: the EMA weights plus what `gan sample` needs to re-create the encoder."""
        if not self.accelerator.is_main_process:
            return
        final = self.run_dir / "generator"
        tmp = ckpt.temp_dir_for(final)
        G = self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.G)
        G.save_pretrained(tmp)
        spec = self.conditioner.export(tmp) if self.conditioner is not None else {"modalities": []}
        if self.repair:
            spec.update(frames=self.cfg.repair.frames, resolution=self.cfg.data.resolution)
        if self.joint and self.conditioner is not None:  # what `gan sample` draws from without a prompt
            from gan.joint.sampling import write_caption_bank

            write_caption_bank(tmp, self.dataset.texts, seed=self.cfg.train.seed)
        (tmp / CONDITION_FILE).write_text(json.dumps(
            {"task": self.cfg.task, **spec, "step": self.step, "ema": self.ema is not None}, indent=2))
        ckpt.replace_dir(tmp, final)

    # -- logging --------------------------------------------------------------------------
    def _write_grid(self):
        if self.repair:
            return self._write_repair_preview()
        if not self.accelerator.is_main_process or not self.grid_rows:
            return
        G = self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.G)
        if self.joint:
            from gan.training.joint_steps import joint_preview

            return joint_preview(self, G)
        sampler = Sampler(G, self.conditioner, self.accelerator.device)
        with self.accelerator.autocast():
            cond = sampler.condition(**sampler.row_inputs(self.grid_rows, self.grid_folder))
            images = sampler.generate_from(cond, num=8, seed=self.cfg.train.seed)
        G.train()  # the Sampler switched it to eval; for the live G that matters
        grid = labelled_grid(images, [r.get("text", "") for r in self.grid_rows])
        (self.run_dir / "samples").mkdir(exist_ok=True)
        grid.save(self.run_dir / "samples" / f"step-{self.step:07d}.png")
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("samples", np.asarray(grid), self.step, dataformats="HWC")

    def _evaluate(self):
        G = self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.G)
        self._log(self.periodic_eval(G, self.conditioner, self.accelerator.device))

    def _log(self, stats: dict):
        acc = self.accelerator
        values = {k: (v.item() if torch.is_tensor(v) else v) for k, v in stats.items()}
        acc.log(values, step=self.step)
        if acc.is_main_process:
            with open(self.run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "time": round(time.time(), 3), **values}) + "\n")

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> Path:
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.toml").write_text(to_toml(cfg))
            ckpt.start_run(self.run_dir, self.step, num_processes=acc.num_processes, task=cfg.task,
                           mixed_precision=acc.mixed_precision,
                           resumed_from=str(self.resume_from) if self.resume_from else None)
        acc.wait_for_everyone()
        acc.init_trackers("train", config={k: v for k, v in _flat(cfg).items()})
        stop = {"signal": None}

        def on_signal(signum, _frame):  # a scheduler pre-empting the job: save, then exit cleanly
            stop["signal"] = signum

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:  # the handlers stay until the final checkpoint and export are written
            if self._loop(stop) != self.step:
                self._save()
            self._check_replicas()
            self.export()
            if cfg.train.sample_every:
                self._write_grid()
            acc.wait_for_everyone()  # a process tearing down gloo while another still works aborts both
            acc.end_training()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if stop["signal"] is not None and acc.is_main_process:
            print(f"stopped by signal {stop['signal']} at step {self.step}; resume with --resume latest")
        return self.run_dir

    def _loop(self, stop: dict) -> int:
        """Train until max_steps, a signal or max_minutes; returns the step last checkpointed."""
        acc, t = self.accelerator, self.cfg.train
        D_raw = acc.unwrap_model(self.D)
        start_time, start_step = time.time(), self.step
        start_cpu = time.process_time()
        with tqdm(total=t.max_steps, initial=self.step, disable=not acc.is_main_process,
                  desc="train", dynamic_ncols=True) as bar:  # closed on an error too
            data = iter(self.loader)
            last_saved = self.step if self.resume_from else -1
            stats: dict = {}
            while self.step < t.max_steps:
                for micro in range(t.grad_accum):
                    batch = next(data)
                    with acc.accumulate(self.G, self.D):
                        stats = self._micro_step(batch, D_raw, acc.autocast, micro)
                self.step += 1
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(self.G), self.step)
                dropped = self.guard.end_step(self.step)  # a dropped step logs why, not its non-finite losses
                if dropped is not None:
                    self._log(dropped)
                elif self.step % t.log_every == 0 or self.step == t.max_steps:
                    steps_per_s = (self.step - start_step) / max(time.time() - start_time, 1e-9)
                    self._log({**stats, "speed/steps_per_s": steps_per_s,
                               "speed/kimg": self.step * t.batch_size * t.grad_accum * acc.num_processes / 1000})
                bar.update(1)
                bar.set_postfix(d=f"{stats['loss/d'].item():.3f}", g=f"{stats['loss/g'].item():.3f}")
                if t.sample_every and self.step % t.sample_every == 0:
                    self._write_grid()
                if self.periodic_eval is not None and self.step % t.eval_every == 0:
                    self._evaluate()
                if self.step % t.checkpoint_every == 0:
                    self._save()
                    last_saved = self.step
                if self._should_stop(stop, start_time, start_cpu):
                    break
        return last_saved

    def _check_replicas(self) -> None:
        """Under DDP every process must end with the same weights; run_info.json records that it did."""
        acc = self.accelerator
        same = replicas_identical(acc, [m for m in self.trained_models().values() if m is not None])
        if acc.is_main_process:
            ckpt.write_run_info(self.run_dir, end_step=self.step, replicas_identical=same)
        if not same:  # a bug, not a user mistake: keep the traceback
            raise RuntimeError(f"step {self.step}: the {acc.num_processes} processes ended with different weights")

    def _should_stop(self, stop: dict, start_time: float, start_cpu: float) -> bool:
        wall, cpu = self.cfg.train.max_minutes, self.cfg.train.max_cpu_minutes
        local = stop["signal"] is not None or (wall > 0 and time.time() - start_time > wall * 60) \
            or (cpu > 0 and time.process_time() - start_cpu > cpu * 60)
        return self._any_process(local)  # every process leaves at the same step, or the next collective hangs

    def _write_repair_preview(self):
        """damaged | repaired | original for a few eval clips with fixed masks, as GIF and PNG strip."""
        if not self.accelerator.is_main_process:
            return
        from gan.training.repair_steps import repair_preview

        G = self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.G)
        split = Path(self.cfg.data.root) / self.cfg.data.eval_split
        repair_preview(G, split if (split / "metadata.jsonl").is_file() else self.dataset.split_dir,
                       self.cfg, self.run_dir / "samples", self.step, self.accelerator.device,
                       conditioner=self.conditioner)
        G.train()

    def _micro_step(self, batch, D_raw, autocast, micro: int = 0) -> dict:
        if self.repair:
            from gan.training.repair_steps import repair_micro_step

            return repair_micro_step(self, batch, D_raw, autocast, micro)
        if self.joint:
            from gan.training.joint_steps import joint_micro_step

            return joint_micro_step(self, batch, D_raw, autocast, micro)
        return image_micro_step(self, batch, D_raw, autocast, micro)

    def optimizer_step(self, which: str, loss: torch.Tensor) -> None:
        """The micro-steps' `opt_<which>.step()`: through the non-finite guard, which looks first."""
        self.guard.step(which, loss, self.opt_d if which == "d" else self.opt_g, self.step + 1)

    def trained_models(self) -> dict:
        """What training changes, unwrapped: checked for NaN before a save and compared across processes."""
        unwrap = self.accelerator.unwrap_model
        trained_condition = self.conditioner is not None and self.conditioner.trainable
        return {"G": unwrap(self.G), "D": unwrap(self.D), "the condition model":
                unwrap(self.cond_model) if trained_condition else None,
                "EMA": self.ema.model if self.ema is not None else None}


def _flat(cfg: Config) -> dict:
    """Flat scalar view of the config for the tracker's hyper-parameter table."""
    out = {}
    for section, values in to_dict(cfg).items():
        if isinstance(values, dict):
            for k, v in values.items():
                out[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        else:
            out[section] = values
    return out


def train(cfg: Config, resume: str | None = None) -> Path:
    return Trainer(cfg, resume=resume).train()
