"""One feature pass for every feature metric, as a Metric-style object (update / compute / reset).

Images go through the backbone once; FID, KID, IS and precision/recall/density/coverage are
all computed from the stored features. Under several processes each one feeds its own shard
with the samples' global indices, and `compute` gathers the rows from every process and
sorts them by index: the statistics see exactly N samples (no sampler padding, no duplicates)
in the same order as a single-process run, so both give the same numbers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from gan.errors import GanError
from gan.metrics import stats

# What each metric needs from the generated side.
_NEEDS_REAL = {"fid", "kid", "pr"}


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a (n_r, ...) tensor from every process along dim 0 (n_r may differ)."""
    _, size = world()
    if size == 1:
        return t
    n = torch.tensor([t.shape[0]], dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype)
    padded[: t.shape[0]] = t.cpu()
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])


class _Rows:
    """Rows of features (and optionally logits) with the global index of each sample."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.index, self.features, self.logits = [], [], []

    def add(self, index: torch.Tensor, out: dict):
        self.index.append(index.long().cpu())
        self.features.append(out["features"].float().cpu())
        if "logits" in out:
            self.logits.append(out["logits"].float().cpu())

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All processes' rows in global-index order; (N, D) features and (N, K) logits or None."""
        if not self.index:
            raise GanError("no samples were added before compute()")
        index = gather_rows(torch.cat(self.index))
        order = index.argsort()
        if len(index.unique()) != len(index):
            raise GanError("the same sample index was added twice; each sample must be fed exactly once")
        features = gather_rows(torch.cat(self.features))[order]
        logits = gather_rows(torch.cat(self.logits))[order] if self.logits else None
        return features, logits


class FeatureMetrics:
    """FID / KID / IS / PR+DC from one pass of a feature backbone.

    `update(images, real=...)` takes uint8 (B, 3, H, W) images; reference features can instead
    be set once from a cache with `set_reference`. `reset()` forgets the generated side only,
    so a trainer can keep the reference and call update/compute/reset every N steps.
    """

    def __init__(self, backbone, metrics: list[str], *, kid_subset_size: int = 1000, kid_subsets: int = 100,
                 pr_k: int = 3, dc_k: int = 5, is_splits: int = 10, allow_rank_deficient: bool = False,
                 seed: int = 0):
        self.backbone = backbone
        self.metrics = [m for m in metrics if m in ("fid", "kid", "is", "pr")]
        if "is" in self.metrics and not getattr(backbone, "num_classes", None):
            raise GanError(f"metric 'is' needs class logits, which backbone '{backbone.name}' does not give; "
                           f"use --backbone inception (or dataset, whose logits are the attribute classes)")
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets
        self.pr_k, self.dc_k, self.is_splits = pr_k, dc_k, is_splits
        self.allow_rank_deficient, self.seed = allow_rank_deficient, seed
        self._real, self._fake = _Rows(), _Rows()
        self._reference: torch.Tensor | None = None
        self._next = {True: 0, False: 0}

    @property
    def needs_real(self) -> bool:
        return any(m in _NEEDS_REAL for m in self.metrics)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise GanError(f"feature metrics take uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        return self.backbone(images)

    def update(self, images: torch.Tensor, *, real: bool, index: torch.Tensor | None = None) -> None:
        """Add a batch. `index` = the samples' global indices (required under several processes)."""
        if index is None:
            if world()[1] > 1:
                raise GanError("under several processes, update() needs the samples' global indices")
            index = torch.arange(self._next[real], self._next[real] + images.shape[0])
        self._next[real] = max(self._next[real], int(index.max()) + 1)
        (self._real if real else self._fake).add(index, self.features(images))

    def set_reference(self, features: torch.Tensor) -> None:
        self._reference = features.float()

    def reference(self) -> torch.Tensor:
        if self._reference is None:
            self._reference, _ = self._real.gathered()
        return self._reference

    def reset(self) -> None:
        self._fake.reset()
        self._next[False] = 0

    def compute(self) -> dict:
        """{metric: value}. Every process must call it (the rows are gathered); all get the result."""
        fake, logits = self._fake.gathered()
        real = self.reference() if self.needs_real else None
        out: dict = {"num_generated": fake.shape[0]}
        if real is not None:
            out["num_real"] = real.shape[0]
        if "fid" in self.metrics:
            out["fid"] = stats.fid_from_features(real, fake, allow_rank_deficient=self.allow_rank_deficient)
        if "kid" in self.metrics:
            mean, std = stats.kid(real, fake, subset_size=self.kid_subset_size, num_subsets=self.kid_subsets,
                                  seed=self.seed)
            out["kid"], out["kid_std"] = mean, std
        if "is" in self.metrics:
            mean, std = stats.inception_score(logits, splits=self.is_splits)
            out["is"], out["is_std"] = mean, std
        if "pr" in self.metrics:
            out.update(stats.precision_recall(real, fake, k=self.pr_k))
            out.update(stats.density_coverage(real, fake, k=self.dc_k))
        return out
