import numpy as np
import pytest

from gan.atomic import atomic_path


def test_interleaved_writers_of_one_file_both_finish_and_the_last_wins(tmp_path):
    # two trainings building the same cache at once: before, both used one temp name and the first
    # rename left the second with nothing to rename (FileNotFoundError)
    target = tmp_path / "cache" / "audio-train-x.npy"
    with atomic_path(target, suffix=".tmp.npy") as first:
        with atomic_path(target, suffix=".tmp.npy") as second:
            assert first != second and first.parent == second.parent == target.parent
            np.save(second, np.arange(3))
        np.save(first, np.arange(5))
    np.testing.assert_array_equal(np.load(target), np.arange(5))
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp files left


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    target = tmp_path / "stats.npz"
    np.savez(target, a=np.ones(2))
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target, suffix=".tmp.npz") as tmp:
            np.savez(tmp, a=np.zeros(2))
            raise RuntimeError("disk full")
    np.testing.assert_array_equal(np.load(target)["a"], np.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["stats.npz"]
