"""Writing cache files so that readers never see half a file and concurrent writers never collide.

Two trainings started at once on one dataset both build its caches; with a fixed temp name the first
rename took the second writer's file away (FileNotFoundError, seen in session 9). Each writer now
gets its own temp file next to the target, and the last complete write wins.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a fresh temp path next to `path`; rename it over `path` when the block succeeds, delete it
    when the block raises. `suffix` must end as the writer expects (np.save adds ".npy" otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
