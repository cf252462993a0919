"""Weights files read without running code, checked against an architecture.

`.safetensors`, or `.pth`/`.pt`/`.bin` through `torch.load(weights_only=True)`: a file that
needs to unpickle anything but tensors is refused with an error naming what it refers to.
"""

from __future__ import annotations

import hashlib
from pickle import UnpicklingError  # the error torch's safe loader raises; nothing is unpickled
import re
from pathlib import Path
from typing import Callable

import torch

from gan.errors import GanError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")




def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of names and raw bytes in sorted key order: identifies weights that have no file."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """name -> tensor from .safetensors or a tensors-only .pth/.pt; GanError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise GanError(f"{what}: {path} not found")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise GanError(f"{what}: {path} has suffix '{path.suffix}'; expected one of {', '.join(WEIGHT_SUFFIXES)}")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise GanError(f"{what}: {path} is not a readable safetensors file ({e})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except UnpicklingError as e:
            found = re.search(r"GLOBAL (\S+)", str(e))  # torch names the first refused class or function
            detail = f" (it refers to {found.group(1)})" if found else ""
            raise GanError(
                f"{what}: {path} holds pickled Python objects besides tensors{detail}, which could run code "
                f"when loaded, so it was refused. Save a plain state dict (torch.save(model.state_dict(), "
                f"path)) or convert it to .safetensors"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise GanError(f"{what}: {path} is not a readable torch weights file ({str(e)[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a common checkpoint wrapper
    if not isinstance(state, dict):
        raise GanError(f"{what}: {path} holds a {type(state).__name__}; expected a dict of name -> tensor")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise GanError(f"{what}: {path} has entries that are not tensors: {_some(map(str, bad))}")
    return state


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                     optional: Callable[[str], bool] = lambda k: False) -> dict[str, torch.Tensor]:
    """`state` with floats as float32, after checking its keys and shapes against `expected`."""
    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {_some(keys)}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("wrong shapes", wrong)) if keys]
        raise GanError(f"{what}: the weights do not fit the architecture; " + "; ".join(parts))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _some(items, n: int = 10) -> str:
    items = list(items)
    more = f", ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_model_folder(cls, folder: str | Path, what: str):
    """`cls.from_pretrained(folder)` for a folder a user hands us, refusing anything but safetensors.

    config.json must name `cls` (a folder written for another class is an error, and the name is
    only compared, never imported), and the weights must be `*.safetensors` whose tensors match the
    config: a mismatch, a missing or damaged file, or a pickle-only (.bin) folder is a GanError
    naming the folder. Nothing from the folder is executed.
    """
    import json

    folder = Path(folder)
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GanError(f"{what} {folder}: unreadable config.json ({e}); expected a folder written by save_pretrained")
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name != cls.__name__:
        raise GanError(f"{what} {folder}: config.json names class {name!r}; expected {cls.__name__!r}")
    if not list(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        raise GanError(f"{what} {folder}: no .safetensors weights (found {found or 'none'}); only safetensors "
                       f"are loaded from model folders, never pickles")
    from safetensors import SafetensorError, safe_open

    try:
        stored = set()
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), framework="pt") as handle:
                stored |= set(handle.keys())
        model = cls.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip() and "ignore_mismatched_sizes" not in x]
        more = f" ... ({len(lines) - 4} more)" if len(lines) > 4 else ""
        raise GanError(f"{what} {folder}: weights do not match its config.json or are damaged: "
                       + " ".join(lines[:4]) + more) from None
    # from_pretrained only warns about missing tensors (and initialises them at random): refuse instead
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        raise GanError(f"{what} {folder}: weights do not match its config.json: missing {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                       f"{' ...' if len(unexpected) > 5 else ''}")
    return model
