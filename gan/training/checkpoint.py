"""Run folders, checkpoints and the exported generator.

    runs/<name>/
        config.toml          the resolved configuration
        stats.jsonl          one JSON line per logged step
        run_info.json        processes, task, start step; at the end whether all replicas agreed
        checkpoint-<step>/   accelerator.save_state: models, optimizers, EMA, RNG, step
        generator/           EMA generator (save_pretrained) + what `gan sample` needs
        samples/             fixed-prompt grids during training
        logs/                TensorBoard events

Folders are written under a temporary name and renamed into place, so a run killed while
saving leaves the previous checkpoint or export intact and never a half-written one; the next
start removes what such a kill left behind. A checkpoint is never written from non-finite
weights, and a failed write (disk full) removes its partial folder and says which one is intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from gan.errors import GanError
from gan.training.guards import check_finite_weights

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (temporary folders are ignored)."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """`latest` -> newest checkpoint (error if none); `auto` -> newest or None; else a path."""
    if not resume:
        return None
    if resume in ("latest", "auto"):
        ckpts = list_checkpoints(run_dir)
        if ckpts:
            return ckpts[-1][1]
        if resume == "auto":
            return None
        raise GanError(f"--resume latest: no checkpoint-<step> folder in {run_dir}")
    path = Path(resume)
    if not (path / "train_state.json").is_file():
        raise GanError(f"--resume {resume}: not a checkpoint folder (expected {path}/train_state.json)")
    return path


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder over `final`, keeping the old one until the new is in place."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def temp_dir_for(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from a run killed while saving
    return tmp


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def write_train_state(folder: Path, state: dict) -> None:
    (folder / "train_state.json").write_text(json.dumps(state, indent=2))


def read_train_state(folder: Path) -> dict:
    return json.loads((folder / "train_state.json").read_text())


def save_checkpoint(trainer) -> Path:
    """checkpoint-<step>/ of a Trainer: accelerate's state, the EMA and train_state.json."""
    acc, step = trainer.accelerator, trainer.step
    final = trainer.run_dir / f"checkpoint-{step}"
    check_finite_weights(trainer.trained_models(), step, trainer.last_checkpoint)
    tmp = temp_dir_for(final) if acc.is_main_process else final.with_name(final.name + ".tmp")
    acc.wait_for_everyone()
    # models (safetensors), optimizers and the RNG states of every process; then EMA, step, rename
    _guarded_write(trainer, final, tmp, lambda: acc.save_state(str(tmp)), everywhere=True)
    _guarded_write(trainer, final, tmp, lambda: _finish(trainer, tmp, final))
    acc.wait_for_everyone()
    return final


def _finish(trainer, tmp: Path, final: Path) -> None:
    from safetensors.torch import save_file

    state = {"step": trainer.step, "config_name": trainer.cfg.name, "nonfinite": trainer.guard.state_dict()}
    if trainer.ema is not None:
        ema_state = trainer.ema.state_dict()
        save_file({k: v.contiguous() for k, v in ema_state.pop("model").items()}, str(tmp / "ema.safetensors"))
        state["ema"] = ema_state  # decay, warm-up and step of the average
    write_train_state(tmp, state)
    replace_dir(tmp, final)
    prune_checkpoints(trainer.run_dir, trainer.cfg.train.checkpoints_total_limit)


def _guarded_write(trainer, final: Path, tmp: Path, write, everywhere: bool = False) -> None:
    """Run one part of a checkpoint write on every process (or the main one). An OSError (disk
    full) on any process becomes the same GanError on all of them, the partial folder removed."""
    error = None
    if everywhere or trainer.accelerator.is_main_process:
        try:
            write()
        except OSError as e:
            error = e
    if not trainer._any_process(error is not None):  # also a barrier: every process has written
        return
    if trainer.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    last = trainer.last_checkpoint
    kept = f"the previous checkpoint {last} is intact" if last else "no earlier checkpoint had been written"
    raise GanError(f"step {trainer.step}: disk full/IO error while writing {final.name}: "
                   f"{error or 'on another process'}; {kept} (the partial {tmp.name} was removed). "
                   f"Free space in {trainer.run_dir} and continue with --resume latest")


def start_run(run_dir: Path, step: int, **info) -> None:
    """Before the first step (main process): clear what a killed run left, write run_info.json."""
    clean_partial(run_dir)
    trim_stats(run_dir / "stats.jsonl", step)
    write_run_info(run_dir, fresh=True, start_step=step, **info)


def clean_partial(run_dir: Path) -> None:
    """Remove the *.tmp folders of a run killed while saving, and put back a *.old folder whose
    replacement never arrived (killed between replace_dir's two renames)."""
    for old in run_dir.glob("*.old"):
        final = old.with_suffix("")
        if old.is_dir() and not final.exists():
            os.replace(old, final)
        elif old.is_dir():
            shutil.rmtree(old)
    for tmp in run_dir.glob("*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp)


def trim_stats(path: Path, step: int) -> None:
    """Keep the stats.jsonl lines of steps up to `step` (a resumed run logs the later ones again)
    and drop a line cut short by a kill, so the logged steps continue without repeats."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if line.endswith("\n") and _logged_step(line) <= step]
    if len(keep) != len(lines):
        part = path.with_name(path.name + ".part")
        part.write_text("".join(keep))
        os.replace(part, path)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # unreadable: dropped


def write_run_info(run_dir: Path, fresh: bool = False, **fields) -> None:
    """run_info.json: how the run was launched (processes, task) and, at the end, its checks."""
    path = run_dir / "run_info.json"
    info = {} if fresh or not path.is_file() else json.loads(path.read_text())
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({**info, **fields}, indent=2))
    os.replace(part, path)


# What decides the weights' shapes and meaning: a resumed run must keep these (training schedule,
# losses, optimiser and data paths may change between a run's legs).
ARCHITECTURE = {
    "": ("task",),
    "data": ("resolution",),
    "text": None,  # None = the whole section
    "condition": ("modalities", "fusion", "fusion_dim", "fusion_token_dim", "weights", "audio_encoder",
                  "image_encoder", "encoder_width", "encoder_dim"),
    "model": None,
    "joint": ("conditioned", "audio_channels", "trunk_resolution", "head_style", "audio_source",
              "attention_resolutions", "sample_rate", "seconds", "n_fft", "hop_length", "n_mels", "f_max"),
    "repair": ("frames", "conditioned", "propagate"),
}


def architecture_changes(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every ARCHITECTURE field that differs (to_dict views of two configs)."""
    changes = []
    for section, keys in ARCHITECTURE.items():
        old, new = (saved, current) if section == "" else (saved.get(section, {}), current.get(section, {}))
        for key in keys if keys is not None else sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(f"{section + '.' if section else ''}{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def check_resume_config(run_dir: Path, current: dict) -> None:
    """Refuse to resume `run_dir` with a config that builds other models: loading its checkpoint would
    fail with a shape mismatch deep in accelerate, or, worse, succeed and quietly change the model."""
    from gan.config import load_config, to_dict

    saved_file = run_dir / "config.toml"
    if not saved_file.is_file():
        return  # (a run folder from before config.toml was written: nothing to compare with)
    try:
        saved = to_dict(load_config(saved_file))
    except GanError:
        return  # written by another version of the schema; the checkpoint load itself still checks shapes
    changes = architecture_changes(saved, current)
    if changes:
        raise GanError(
            f"{run_dir} was trained with other models than this config builds ({'; '.join(changes)}). "
            f"Resume it with its own config ({saved_file}), or train a new run with --set train.run_name=NAME "
            f"(nothing was changed)")
