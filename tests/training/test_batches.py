import pytest
import torch

from gan.errors import GanError
from gan.training.batches import ResumableBatchSampler


def take(it, n):
    return [next(it) for _ in range(n)]


def test_epoch_covers_every_sample_once_across_processes():
    n, b, world = 50, 4, 3  # 4 global batches of 12 per epoch, 2 samples dropped
    samplers = [ResumableBatchSampler(n, b, world, r, seed=1) for r in range(world)]
    seen = [i for s in samplers for batch in take(iter(s), len(s)) for i in batch]
    assert len(seen) == len(set(seen)) == 48


def test_resume_continues_the_same_order():
    full = take(iter(ResumableBatchSampler(30, 4, seed=5)), 20)  # crosses several epochs
    resumed = take(iter(ResumableBatchSampler(30, 4, seed=5, start=13)), 7)
    assert resumed == full[13:]
    assert full[:7] != full[7:14]  # epochs are reshuffled


def test_seed_changes_order_and_too_small_dataset_is_an_error():
    a = take(iter(ResumableBatchSampler(30, 4, seed=0)), 3)
    b = take(iter(ResumableBatchSampler(30, 4, seed=1)), 3)
    assert a != b
    with pytest.raises(GanError, match="fewer than one global batch"):
        ResumableBatchSampler(5, 4, num_processes=2)


def test_an_order_function_replaces_the_permutation_and_resumes_exactly():
    # Runs of 2 (i, i + 1) for even i, shuffled: the kind of order AttributeIndex.grouped_order gives.
    def pairs(g):
        runs = torch.arange(20).view(10, 2)
        return runs[torch.randperm(10, generator=g)].flatten()

    full = take(iter(ResumableBatchSampler(21, 4, seed=2, order=pairs)), 12)
    assert all(b[0] % 2 == 0 and b[1] == b[0] + 1 and b[2] % 2 == 0 and b[3] == b[2] + 1 for b in full)
    assert len(ResumableBatchSampler(21, 4, seed=2, order=pairs)) == 5  # 20 ordered rows, not 21
    assert take(iter(ResumableBatchSampler(21, 8, seed=2, order=pairs)), 3)[2] != []  # epochs from the order's length
    assert take(iter(ResumableBatchSampler(21, 4, seed=2, order=pairs, start=7)), 5) == full[7:]
