"""Run folders, checkpoints and the exported generator.

    runs/<name>/
        config.toml          the resolved configuration
        stats.jsonl          one JSON line per logged step
        checkpoint-<step>/   accelerator.save_state: models, optimizers, EMA, RNG, step
        generator/           EMA generator (save_pretrained) + what `gan sample` needs
        samples/             fixed-prompt grids during training
        logs/                TensorBoard events

Folders are written under a temporary name and renamed into place, so a run killed while
saving leaves the previous checkpoint or export intact and never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from gan.errors import GanError

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
