"""Deterministic, resumable data order shared by every process.

Each epoch is a permutation drawn from (seed, epoch) alone, cut into global batches of
batch_size × num_processes; process r takes slice r of each. So the data order depends on
neither the RNG state nor how many times the run was stopped: resuming at micro-batch k
continues exactly where an uninterrupted run would be, and no sample is seen twice per epoch
(the tail that does not fill a global batch is dropped, which is also what keeps processes in step).
`order` replaces the plain permutation (e.g. runs of rows sharing attributes,
gan.data.attribute_index); it must return the same length every epoch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Sampler

from gan.errors import GanError


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, num_samples: int, batch_size: int, num_processes: int = 1, rank: int = 0,
                 seed: int = 0, start: int = 0, order: Callable[[torch.Generator], torch.Tensor] | None = None):
        self.n, self.batch_size, self.world, self.rank = num_samples, batch_size, num_processes, rank
        self.seed, self.start, self.order = seed, start, order
        if order is not None:
            self.n = len(self.permutation(0))
        self.per_epoch = self.n // (batch_size * num_processes)
        if self.per_epoch == 0:
            raise GanError(
                f"the dataset has {self.n} samples{'' if order is None else ' in its order'}, fewer than one global batch "
                f"(train.batch_size {batch_size} × {num_processes} processes); lower train.batch_size")

    def permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g) if self.order is None else self.order(g)

    def batch(self, k: int) -> list[int]:
        """Indices of this process's k-th micro-batch since the start of training."""
        epoch, i = divmod(k, self.per_epoch)
        perm = self.permutation(epoch)
        lo = (i * self.world + self.rank) * self.batch_size
        return perm[lo:lo + self.batch_size].tolist()

    def __iter__(self):
        k = self.start
        epoch, cached = None, None
        while True:  # endless: the trainer stops by step count
            e, i = divmod(k, self.per_epoch)
            if e != epoch:
                epoch, cached = e, self.permutation(e)
            lo = (i * self.world + self.rank) * self.batch_size
            yield cached[lo:lo + self.batch_size].tolist()
            k += 1

    def __len__(self) -> int:
        return self.per_epoch
