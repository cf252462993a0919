"""Reference features, computed once per (source, backbone, resize, count) and cached.

The cache is an `.npz` (no pickles: loaded with allow_pickle=False) next to the data, in
`<parent>/.cache/eval/`, holding the features, their mean and covariance, the sample count and
the provenance as JSON. Its name carries a hash of everything that changes the features: the
source's fingerprint (metadata.jsonl bytes, or the image files' names, sizes and mtimes), the
backbone name and weights hash, the resize mode and the number of images.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gan.atomic import atomic_path
from gan.errors import GanError
from gan.metrics.features import FeatureMetrics, world
from gan.metrics.images import ImageFolder, list_images


def reference_files(source: Path) -> list[Path]:
    """Image files of a split (the rows of its metadata.jsonl, in order) or of a plain folder."""
    if (source / "metadata.jsonl").is_file():
        from gan.data.metadata import read_metadata

        return [source / r["file_name"] for r in read_metadata(source)]
    return list_images(source)


def fingerprint(source: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    meta = source / "metadata.jsonl"
    if meta.is_file():
        h.update(meta.read_bytes())
    else:
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(source)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(source: Path, key: str, backbone_name: str) -> Path:
    slug = backbone_name.replace(":", "-").replace("/", "-")
    return source.resolve().parent / ".cache" / "eval" / f"{source.name}-{slug}-{key[:16]}.npz"


def _load(path: Path) -> tuple[torch.Tensor, dict] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return torch.from_numpy(z["features"].copy()), json.loads(str(z["provenance"]))
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None  # a broken cache file is recomputed, never trusted


def _save(path: Path, features: torch.Tensor, provenance: dict) -> None:
    from gan.metrics.stats import gaussian_stats

    f64 = features.double()
    mu, sigma = gaussian_stats(f64) if f64.shape[0] >= 2 else (f64.mean(0), torch.zeros(f64.shape[1], f64.shape[1]))
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, features=features.numpy(), mu=mu.numpy(), sigma=sigma.numpy(),
                 count=np.int64(features.shape[0]), provenance=np.array(json.dumps(provenance)))


def reference_features(source: str | Path, metric: FeatureMetrics, *, num_real: int = 0,
                       batch_size: int = 64, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """(N, D) reference features for `metric`'s backbone, from the cache when it matches.

    Every process must call this: on a cache miss each extracts its shard and the rows are
    gathered; only the main process writes the cache.
    """
    source = Path(source)
    if not source.is_dir():
        raise GanError(f"reference {source}: no such folder")
    files = reference_files(source)
    if num_real:
        if num_real > len(files):
            raise GanError(f"num_real={num_real} but reference {source} holds only {len(files)} images")
        files = files[:num_real]
    backbone = metric.backbone
    key_parts = {"source": str(source.resolve()), "fingerprint": fingerprint(source, files), "count": len(files),
                 "backbone": backbone.name, "weights_sha256": backbone.weights_sha256, "resize": backbone.resize}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()
    path = cache_path(source, key, backbone.name)
    if path.is_file():
        cached = _load(path)
        if cached is not None and cached[0].shape[0] == len(files):
            return cached[0], {**cached[1], "cache": str(path), "cache_hit": True}
    rank, size = world()
    dataset = ImageFolder(files)
    mine = list(range(rank, len(files), size))
    started = time.time()
    for lo in tqdm(range(0, len(mine), batch_size), desc="reference features", disable=not progress or rank != 0):
        idx = mine[lo:lo + batch_size]
        images = torch.stack([dataset[i] for i in idx])  # (B, 3, H, W) uint8
        metric.update(images, real=True, index=torch.tensor(idx))
    features = metric.reference()
    provenance = {**key_parts, "converted": dict(dataset.converted), "seconds": round(time.time() - started, 1)}
    if rank == 0:
        _save(path, features, provenance)
    return features, {**provenance, "cache": str(path), "cache_hit": False}
