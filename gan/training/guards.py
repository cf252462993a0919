"""What keeps a run's checkpoints trustworthy: non-finite losses and gradients, NaN weights, replicas.

`NonFiniteGuard.step` replaces each micro-step's `optimizer.step()`: it looks at the loss and the
gradient BEFORE the update, because a NaN that has reached the weights cannot be taken back.
With `train.on_nonfinite = "stop"` it raises a GanError naming the step, the loss (or gradient
norm) and the last good checkpoint; with "skip" it drops the whole step's update (D's and G's),
halves every learning rate and stops after `train.max_nonfinite_skips` dropped steps in a row.
Every process takes the same decision: the flags are summed over processes before it is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from gan.errors import GanError


def _params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def grad_norm(params) -> torch.Tensor:
    """The total L2 norm of the gradients, as a tensor (no host sync)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


class NonFiniteGuard:
    def __init__(self, mode: str, max_skips: int, accelerator, optimizers: list,
                 last_checkpoint: Callable[[], Path | None]):
        self.mode, self.max_skips, self.acc = mode, max_skips, accelerator
        self.optimizers, self.last_checkpoint = optimizers, last_checkpoint
        self.skipped, self.consecutive = 0, 0  # dropped steps in the run, and in a row now
        self._loss_bad: dict[str, torch.Tensor] = {}  # per optimizer, over the accumulation window
        self._dropped: str | None = None  # what made the current step be dropped

    def step(self, which: str, loss: torch.Tensor, optimizer, step: int) -> None:
        """`optimizer.step()` and `zero_grad()` unless loss/<which> or its gradient is not finite."""
        bad = ~torch.isfinite(loss.detach()).all()
        self._loss_bad[which] = bad | self._loss_bad[which] if which in self._loss_bad else bad
        if not self.acc.sync_gradients:
            return  # inside an accumulation window accelerate makes step() a no-op anyway
        what = self._check(which, optimizer)
        if what is None and self._dropped is None:
            optimizer.step()
        elif what is not None and self.mode == "stop":
            raise GanError(f"step {step}: {what} is not finite; stopped before applying it. {self._advice()}")
        else:
            self._dropped = self._dropped or what  # G's update goes with D's: the step is dropped whole
        optimizer.zero_grad(set_to_none=True)

    def _check(self, which: str, optimizer) -> str | None:
        loss_bad = self._loss_bad.pop(which)
        # Under fp16 the GradScaler expects inf gradients now and then and skips those steps itself.
        norm = torch.zeros(()) if self.acc.scaler is not None else grad_norm(_params(optimizer))
        flags = torch.stack([loss_bad.float().cpu(), (~torch.isfinite(norm)).float().cpu()])
        if self.acc.num_processes > 1:  # one process's NaN must stop or skip all of them alike
            flags = self.acc.reduce(flags.to(self.acc.device), reduction="sum").cpu()
        loss_flag, grad_flag = (flags > 0).tolist()
        return f"loss/{which}" if loss_flag else f"grad_norm/{which}" if grad_flag else None

    def end_step(self, step: int) -> dict | None:
        """After each optimizer step: None, or (for a dropped step) the stats to log."""
        if self._dropped is None:
            self.consecutive = 0
            return None
        what, self._dropped = self._dropped, None
        self.skipped, self.consecutive = self.skipped + 1, self.consecutive + 1
        if self.consecutive >= self.max_skips:
            raise GanError(f"step {step}: {what} was not finite in {self.consecutive} steps in a row "
                           f"(train.max_nonfinite_skips = {self.max_skips}); stopped. {self._advice()}")
        lrs = {}
        for name, opt in zip(("d", "g"), self.optimizers):
            for i, group in enumerate(opt.param_groups):
                group["lr"] *= 0.5
                lrs[f"lr/{name}" if i == 0 else f"lr/{name}{i}"] = group["lr"]
        return {"nonfinite/skipped": self.skipped, "nonfinite/consecutive": self.consecutive,
                "nonfinite/cause": what, **lrs}

    def _advice(self) -> str:
        last = self.last_checkpoint()
        where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        return (f"Nothing non-finite was saved; {where}. Try lower learning rates (optim.d_lr, optim.g_lr), "
                f"train.mixed_precision=no, or train.on_nonfinite=skip")

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.consecutive = int(state["skipped"]), int(state["consecutive"])


def check_finite_weights(models: dict, step: int, last: Path | None) -> None:
    """GanError if any parameter or buffer of the named models is not finite (before a save)."""
    for name, model in models.items():
        if model is None:
            continue
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written yet"
            raise GanError(f"step {step}: refusing to write checkpoint-{step}: {name} has non-finite values "
                           f"({', '.join(bad[:3])}); {kept}. Try a lower learning rate or train.on_nonfinite=skip")


def replica_checksums(models: list) -> torch.Tensor:
    """(len(models),) int64: per model, a position-weighted sum of its weights' bit patterns.

    It changes when any bit of any weight changes (or two weights swap), so equal checksums on
    every process mean equal replicas; int64 overflow wraps, the same way on every process."""
    out = []
    for model in models:
        total = torch.zeros((), dtype=torch.int64)
        for v in model.state_dict().values():
            if v.is_floating_point():
                bits = v.detach().float().cpu().contiguous().view(torch.int32).flatten().long()
                total += (bits * (torch.arange(bits.numel()) % 65521 + 1)).sum()
        out.append(total)
    return torch.stack(out)


def replicas_identical(accelerator, models: list) -> bool:
    """Whether every process holds the same weights (True with one process)."""
    if accelerator.num_processes == 1:
        return True
    every = accelerator.gather(replica_checksums(models)[None].to(accelerator.device)).cpu()  # (processes, models)
    return bool((every == every[0]).all())
