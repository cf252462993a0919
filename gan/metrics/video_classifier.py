"""An offline video embedding for the moving-shapes clips, and a Fréchet distance on it ("VFID").

VFID in the papers (vid2vid, the video-inpainting literature) embeds clips with an I3D network
pretrained on Kinetics, which needs downloaded weights. Here a small 3D CNN is trained on the real
clips of the built-in moving-shapes dataset to predict what each clip shows (color, shape, size,
direction of motion), and its penultimate features are the embedding. The result is an offline
VFID *analogue*: it ranks methods on shapes clips but is NOT comparable with I3D-based VFID values.

Motion labels come from each row's motion.centers (box centre per frame): the displacement over
the clip is binned into 4 directions, right/down/left/up (y down), 90 degrees each; exact
diagonals go to right/left. Four bins, not the dataset's 8 compass words, so small training sets
still have enough clips per class; a clip moving under half a pixel has no label and is left out
of the motion loss and accuracy. The 4x4 spatial layout is kept to the last layer (as in the image
classifier) and time is averaged only at the end, after 3-frame kernels turned motion into channels.

Measured (1000 train / 200 test clips, 8 frames at 32 px, 1000 steps, ~2 single-thread CPU
minutes): color 1.00, size 1.00, motion 0.96, shape 0.74 - shape is the slowest head to learn.
"""

import hashlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from tqdm.auto import tqdm

from gan.errors import GanError
from gan.metrics.attributes import attribute_indices
from gan.metrics.stats import fid_from_features
from gan.precision import cpu_autocast

MOTIONS = ("right", "down", "left", "up")  # clockwise from +x in image coordinates (y down)
NAMES = ("color", "shape", "size", "motion")
STILL_PX = 0.5  # a displacement below this (px at the clip's own size) has no direction
IGNORE = -100  # label of a clip without a direction: F.cross_entropy's default ignore_index


class VideoAttributeClassifier(ModelMixin, ConfigMixin):
    """3D CNN over (B, T, 3, R, R) clips; a diffusers model so the cache is save/from_pretrained."""

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,  # R: input clips are (B, T, 3, R, R) in [-1, 1]
        frames: int = 8,  # T the classifier was trained on; features() insists on it
        num_classes: tuple[int, ...] = (8, 3, 2, 4),  # classes per head, in attribute_names order
        attribute_names: tuple[str, ...] = NAMES,  # one classification head each
        width: int = 16,  # channels of the first conv; doubled at the first two downsamplings
        feature_dim: int = 128,  # width of the penultimate features (the VFID-style embedding)
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise GanError(f"video classifier: resolution must be a power of two >= 8, got {resolution}")
        if frames < 1:
            raise GanError(f"video classifier: frames must be >= 1, got {frames}")
        if len(num_classes) != len(attribute_names):
            raise GanError(f"video classifier: {len(num_classes)} num_classes for {len(attribute_names)} heads")

        def block(c_in, c_out, stride):
            return [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU()]

        # full-resolution block, then one (1, 2, 2)-strided block per halving down to 4x4; time is kept
        layers, c = block(3, width, 1), width
        for i in range(int(math.log2(resolution // 4))):
            out = width * 2 ** min(i + 1, 2)
            layers += block(c, out, (1, 2, 2))
            c = out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * 16, feature_dim)
        self.heads = nn.ModuleDict({n: nn.Linear(feature_dim, k) for n, k in zip(attribute_names, num_classes)})

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.body(clips.transpose(1, 2))  # (B, T, 3, R, R) -> (B, 3, T, R, R) -> (B, C, T, 4, 4)
        x = x.mean(2)  # (B, C, 4, 4): temporal pooling
        return F.relu(self.fc(x.flatten(1)))  # (B, feature_dim)

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(clips)  # (B, feature_dim)
        return {name: head(h).float() for name, head in self.heads.items()}  # name -> (B, K)


# ---------------------------------------------------------------------------------------------
# Data: a whole split as one uint8 tensor (4000 clips of 8 x 32 x 32 are under 100 MB)


def motion_labels(rows: list[dict], frames: int, where: str = "metadata") -> torch.Tensor:
    """(N,) long direction bins (MOTIONS index, IGNORE when still) from the rows' motion.centers."""
    out = torch.empty(len(rows), dtype=torch.long)
    for i, row in enumerate(rows):
        motion = row.get("motion")
        centers = motion.get("centers") if isinstance(motion, dict) else None
        if not isinstance(centers, list) or len(centers) < frames:
            raise GanError(f"{where} row {i}: expected motion.centers with one (x, y) per frame "
                           f"(>= {frames}), as gan data moving-shapes writes; got {centers!r:.80}")
        dx, dy = (float(b) - float(a) for a, b in zip(centers[0], centers[frames - 1]))
        out[i] = IGNORE if math.hypot(dx, dy) < STILL_PX else round(math.atan2(dy, dx) / (math.pi / 2)) % 4
    return out


def load_clip_split(split_dir: Path, resolution: int, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, 3, R, R) uint8 clips (the first `frames` of each; None: all) and (N, 4) long labels."""
    from gan.data.clips import ClipDataset

    split_dir = Path(split_dir)
    if not (split_dir / "metadata.jsonl").is_file():
        raise GanError(f"video classifier: {split_dir}/metadata.jsonl not found; expected a moving-shapes split folder")
    ds = ClipDataset(split_dir, resolution, preload=True)
    t = ds.shape[0] if frames is None else frames
    if not 1 <= t <= ds.shape[0]:
        raise GanError(f"video classifier: frames={frames} but the clips of {split_dir} have {ds.shape[0]}")
    where = f"{split_dir}/metadata.jsonl"
    attrs = attribute_indices([r.get("attributes") for r in ds.rows], where)[:, :3]  # color, shape, size
    labels = torch.cat([attrs, motion_labels(ds.rows, t, where)[:, None]], 1)  # (N, 4)
    return ds.clips[:, :t].contiguous(), labels


def _to_float(clips: torch.Tensor) -> torch.Tensor:
    return clips.float().div(127.5).sub(1.0) if clips.dtype == torch.uint8 else clips.float()


# ---------------------------------------------------------------------------------------------
# Training


def train_video_classifier(
    train_dir: Path,
    test_dir: Path,
    resolution: int = 32,
    frames: int | None = None,
    epochs: int = 8,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    lr: float = 3e-3,
    width: int = 16,
    threads: int | None = 1,
) -> tuple[VideoAttributeClassifier, dict[str, float]]:
    """Trains on train_dir's real clips (the first `frames` of each; None: all) and returns the
    model and its accuracy on test_dir. threads=1 as in train_attribute_classifier (a 2-thread
    team spins on a shared 2-core machine); None keeps torch's current setting."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(train_dir, test_dir, resolution, frames, epochs, batch_size, seed, progress, lr, width)
    finally:
        torch.set_num_threads(previous)


def _train(train_dir, test_dir, resolution, frames, epochs, batch_size, seed, progress, lr, width):
    x_train, y_train = load_clip_split(train_dir, resolution, frames)
    x_test, y_test = load_clip_split(test_dir, resolution, x_train.shape[1])
    from gan.data.shapes import ATTRIBUTES

    num_classes = tuple(len(ATTRIBUTES[n]) for n in NAMES[:3]) + (len(MOTIONS),)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)  # shuffling and augmentation, independent of the global RNG
    model = VideoAttributeClassifier(resolution, x_train.shape[1], num_classes, NAMES, width=width)
    model = model.to(memory_format=torch.channels_last_3d).train()  # with bf16: ~2x faster on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * math.ceil(len(x_train) / batch_size)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    bar = tqdm(total=total, desc="video classifier", disable=not progress)
    for epoch in range(epochs):
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            x, y = _augment(_to_float(x_train[idx]), y_train[idx].clone(), g)  # (B, T, 3, R, R), (B, 4)
            with cpu_autocast():
                logits = model(x)
            # mean over labelled clips only (still clips have no motion label); 0, not NaN, if none
            loss = sum(F.cross_entropy(logits[n], y[:, j], reduction="sum") / (y[:, j] != IGNORE).sum().clamp(min=1)
                       for j, n in enumerate(NAMES))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
            bar.update()
    bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, _accuracy(predict_video_attributes(model, x_test), y_test)


def _augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-preserving (or label-remapping) augmentation, which tiny training sets need to generalise.

    Every head is translation invariant, so clips shift by up to R/8 px (edges replicated);
    mirroring left-right and playing backwards keep color, shape and size and swap the motion
    direction, which is remapped. Vertical flips would turn triangles upside down: not used.
    Brightness shift + pixel noise also make it less brittle on generated clips.
    """
    b, t, _, r, _ = x.shape
    moving = y[:, 3] != IGNORE
    mirror = torch.rand(b, generator=g) < 0.5
    x = torch.where(mirror[:, None, None, None, None], x.flip(4), x)
    y[mirror & moving & (y[:, 3] % 2 == 0), 3] ^= 2  # right <-> left
    reverse = torch.rand(b, generator=g) < 0.5
    x = torch.where(reverse[:, None, None, None, None], x.flip(1), x)
    y[reverse & moving, 3] = (y[reverse & moving, 3] + 2) % 4  # every direction turns around
    m = max(1, r // 8)
    padded = F.pad(x.flatten(1, 2), (m, m, m, m), mode="replicate")  # (B, T*3, R + 2m, R + 2m)
    dx, dy = torch.randint(0, 2 * m + 1, (2, b), generator=g).tolist()
    x = torch.stack([p[:, j : j + r, i : i + r] for p, i, j in zip(padded, dx, dy)]).view(b, t, 3, r, r)
    x = x + (torch.rand(b, 1, 1, 1, 1, generator=g) - 0.5) * 0.1
    return x + torch.randn(x.shape, generator=g) * 0.04, y


# ---------------------------------------------------------------------------------------------
# Prediction, accuracy and the embedding


def _check_clips(model: VideoAttributeClassifier, clips: torch.Tensor, who: str) -> None:
    r, t = model.config.resolution, model.config.frames
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or tuple(clips.shape[1:]) != (t, 3, r, r):
        got = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise GanError(
            f"{who}: expected clips of shape (N, {t}, 3, {r}, {r}), uint8 or float in [-1, 1], got {got}; "
            f"use a classifier trained on such clips (load_or_train_video_classifier(..., resolution=R, frames=T))"
        )


def _batches(model: VideoAttributeClassifier, clips: torch.Tensor, batch_size: int, who: str):
    """Checked (b, T, 3, R, R) float batches in [-1, 1] on the model's device; model in eval mode."""
    _check_clips(model, clips, who)
    model.eval()
    for i in range(0, len(clips), batch_size):
        yield _to_float(clips[i : i + batch_size]).to(model.device)


@torch.no_grad()
def video_features(model: VideoAttributeClassifier, clips: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, T, 3, R, R) clips, uint8 0..255 or float in [-1, 1] -> (N, feature_dim) float32 features."""
    out = [model.features(x).float().cpu() for x in _batches(model, clips, batch_size, "video features")]
    return torch.cat(out) if out else torch.empty(0, model.config.feature_dim)


@torch.no_grad()
def predict_video_attributes(model: VideoAttributeClassifier, clips: torch.Tensor,
                             batch_size: int = 64) -> dict[str, torch.Tensor]:
    """(N, T, 3, R, R) clips -> head name -> (N,) predicted class indices."""
    preds = {n: [] for n in model.config.attribute_names}
    for x in _batches(model, clips, batch_size, "video classifier"):
        for n, logits in model(x).items():
            preds[n].append(logits.argmax(1).cpu())
    return {n: torch.cat(p) if p else torch.empty(0, dtype=torch.long) for n, p in preds.items()}


def _accuracy(preds: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """Per-head accuracy (motion over clips that move), their "mean", and "all" (every head right)."""
    known = labels != IGNORE  # (N, 4)
    right = torch.stack([preds[n] == labels[:, j] for j, n in enumerate(NAMES)], dim=1) | ~known  # (N, 4)
    acc = {n: right[known[:, j], j].float().mean().item() if known[:, j].any() else float("nan")
           for j, n in enumerate(NAMES)}
    labelled = [acc[n] for n in NAMES if not math.isnan(acc[n])]  # motion is NaN when nothing moves
    acc["mean"] = sum(labelled) / len(labelled)
    acc["all"] = right.all(1).float().mean().item()
    return acc


def vfid(model: VideoAttributeClassifier, real_clips: torch.Tensor, fake_clips: torch.Tensor,
         allow_rank_deficient: bool = True, batch_size: int = 64) -> float:
    """Fréchet distance between the classifier features of two clip sets (offline VFID analogue).

    Not comparable with I3D-based VFID from the papers (see the module docstring). Rank-deficient
    covariances (fewer clips than feature_dim + 1) are allowed by default because evaluation sets
    of clips are small; the value is then biased upwards, so compare methods on equal clip counts.
    """
    real = video_features(model, real_clips, batch_size)  # (N, D)
    fake = video_features(model, fake_clips, batch_size)  # (M, D)
    return fid_from_features(real, fake, allow_rank_deficient=allow_rank_deficient)


# ---------------------------------------------------------------------------------------------
# Cache: train once per dataset, next to it


def dataset_fingerprint(dataset_root: Path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        path = Path(dataset_root) / split / "metadata.jsonl"
        if not path.is_file():
            raise GanError(f"video classifier: {path} not found; "
                           "expected a moving-shapes dataset with train/ and test/")
        h.update(split.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def load_or_train_video_classifier(dataset_root: Path, resolution: int = 32, frames: int | None = None,
                                   progress: bool = True) -> tuple[VideoAttributeClassifier, dict]:
    """The classifier for this dataset, resolution and clip length: from dataset_root/.cache, else
    trained and cached. frames=None uses the clips' full length."""
    root = Path(dataset_root)
    name = f"video-classifier-{dataset_fingerprint(root)}-{resolution}" + (f"-t{frames}" if frames else "")
    folder = root / ".cache" / name
    if (folder / "accuracy.json").is_file():
        try:
            model = VideoAttributeClassifier.from_pretrained(folder).eval()
            return model, json.loads((folder / "accuracy.json").read_text())
        except (OSError, ValueError, RuntimeError) as e:  # damaged cache: retrain rather than fail
            warnings.warn(f"video classifier cache {folder} is unreadable ({e}); retraining")
    model, acc = train_video_classifier(root / "train", root / "test", resolution, frames, progress=progress)
    # write a sibling temp folder and rename, so a killed run never leaves a half-written cache
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "accuracy.json").write_text(json.dumps(acc, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return model, acc
