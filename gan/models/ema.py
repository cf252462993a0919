"""Exponential moving average of a model's weights, the copy GANs sample from.

Unlike diffusers' EMAModel, buffers are copied too (not averaged: a buffer such as a
spectral-norm power-iteration vector or a counter has no meaningful average), so the EMA copy
is a complete, ready-to-run model.
"""

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """Strips DDP/DataParallel and torch.compile wrappers, returning the module that owns the weights."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class EMA:
    """Holds `.model`, an averaged copy of a live model (eval mode, requires_grad False).

    After `update(model, step)`: ema = d * ema + (1 - d) * live for every parameter, with
    d = min(decay, (1 + step) / (10 + step)) when warmup is on (so the copy follows the live
    model closely while it is still changing fast), else d = decay. Buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.step = -1  # step of the last update; -1 = never updated
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        for p in self.model.parameters():
            p.grad = None  # deepcopy carries grads over; the copy never needs them
        # Cached once: update() runs every training step.
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())

    def decay_at(self, step: int) -> float:
        """The decay `update` uses at `step`."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    def _live(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        live = unwrap(model)
        params, buffers = list(live.parameters()), list(live.buffers())
        if len(params) != len(self._params) or len(buffers) != len(self._buffers):
            raise ValueError(
                f"EMA: model has {len(params)} parameters and {len(buffers)} buffers, the EMA copy "
                f"{len(self._params)} and {len(self._buffers)}; is it the same architecture?"
            )
        return params, buffers

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Moves the averaged weights toward `model` (DDP-wrapped or not) and copies its buffers."""
        params, buffers = self._live(model)
        weight = 1.0 - self.decay_at(step)
        torch._foreach_lerp_(self._params, [p.detach() for p in params], weight)
        for dst, src in zip(self._buffers, buffers):
            dst.copy_(src)
        self.step = int(step)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Writes the averaged parameters and the buffers into `model` (e.g. before evaluation)."""
        params, buffers = self._live(model)
        for dst, src in zip(params + buffers, self._params + self._buffers):
            dst.copy_(src)

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: the averaged weights, buffers and the schedule state.

        Tensors are cloned, so a later `update` cannot change a state dict already taken.
        """
        model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"decay": self.decay, "warmup": self.warmup, "step": self.step, "model": model}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
