"""Attribute accuracy: does a generated image show the color, shape, size and position it was asked for?

A small CNN is trained on real images of the built-in shapes dataset to predict its four attributes
(100% on every attribute of the real 2000-image test split after under a CPU minute of training),
then a generated image counts as right when the predicted attributes match its prompt's. Its
penultimate features double as an offline embedding for FID-style metrics, so nothing has to be
downloaded to evaluate on shapes.

The classifier sees whole images without global pooling: position is one of the attributes, so
the spatial layout has to survive to the last layer (and no flips in augmentation either).
"""

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from tqdm.auto import tqdm

from gan.errors import GanError
from gan.precision import cpu_autocast

NAMES = ("color", "shape", "size", "position")


class AttributeClassifier(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        resolution: int = 32,  # R: inputs are (B, in_channels, R, R) in [-1, 1]
        num_classes: tuple[int, ...] = (8, 3, 2, 5),  # classes per attribute, in attribute_names order
        attribute_names: tuple[str, ...] = NAMES,  # one classification head each
        width: int = 32,  # channels of the first conv; doubled at the first two downsamplings
        feature_dim: int = 128,  # width of the penultimate features (the FID-style embedding)
        in_channels: int = 3,  # 3 for RGB images, 1 for log-mel spectrograms (gan.joint.audio_classifier);
        # last, with a default, so caches saved before it existed load as the RGB classifiers they are
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise GanError(f"attribute classifier: resolution must be a power of two >= 8, got {resolution}")
        if len(num_classes) != len(attribute_names):
            raise GanError(f"attribute classifier: {len(num_classes)} num_classes for {len(attribute_names)} attributes")
        # one stride-2 conv per halving, down to a 4x4 map that still knows where things are
        layers, c = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()], width
        for i in range(int(math.log2(resolution // 4))):
            out = width * 2 ** min(i + 1, 2)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c * 16, feature_dim)
        self.heads = nn.ModuleDict({n: nn.Linear(feature_dim, k) for n, k in zip(attribute_names, num_classes)})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.body(images)  # (B, C, 4, 4)
        return F.relu(self.fc(x.flatten(1)))  # (B, feature_dim)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)  # (B, feature_dim)
        return {name: head(h).float() for name, head in self.heads.items()}  # name -> (B, K)


# ---------------------------------------------------------------------------------------------
# Data: a whole split as one uint8 tensor, since the shapes set fits in memory many times over


def _class_lists() -> dict[str, list[str]]:
    from gan.data.shapes import ATTRIBUTES

    return ATTRIBUTES


def attribute_indices(attributes: list[dict], where: str = "attributes") -> torch.Tensor:
    """[{color, shape, size, position} names] -> (N, 4) long class indices; GanError names the row."""
    classes = _class_lists()
    out = torch.empty(len(attributes), len(NAMES), dtype=torch.long)
    for i, attrs in enumerate(attributes):
        for j, name in enumerate(NAMES):
            value = attrs.get(name) if isinstance(attrs, dict) else None
            if value not in classes[name]:
                raise GanError(f"{where} row {i}: '{name}' is {value!r}; expected one of {classes[name]}")
            out[i, j] = classes[name].index(value)
    return out


def load_split(split_dir: Path, resolution: int, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, R, R) uint8 images and (N, 4) long labels of a shapes split folder."""
    from gan.data.dataset import ImageTextDataset

    split_dir = Path(split_dir)
    if not (split_dir / "metadata.jsonl").is_file():
        raise GanError(f"attribute classifier: {split_dir}/metadata.jsonl not found; expected a shapes split folder")
    ds = ImageTextDataset(split_dir, resolution)
    labels = attribute_indices([r.get("attributes") for r in ds.rows], f"{split_dir}/metadata.jsonl")
    images = torch.empty(len(ds), 3, resolution, resolution, dtype=torch.uint8)
    for i in tqdm(range(len(ds)), desc=f"images {split_dir.name}", disable=not progress, leave=False):
        images[i] = ds[i]["image"].add(1).mul(127.5).round().to(torch.uint8)  # back to exact bytes
    return images, labels


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)  # uint8 -> [-1, 1], as the dataset gives them


# ---------------------------------------------------------------------------------------------
# Training


def train_attribute_classifier(
    train_dir: Path,
    test_dir: Path,
    resolution: int = 32,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    lr: float = 3e-3,
    width: int = 32,
    threads: int | None = 1,
) -> tuple[AttributeClassifier, dict[str, float]]:
    """Trains on train_dir's real images; returns the model and its accuracy on test_dir.

    threads=1 by default: on a shared 2-core machine a 2-thread OpenMP team spins whenever the
    other core is busy, which was measured 3-40x slower; one thread is steady and reproducible.
    None keeps torch's current setting.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(train_dir, test_dir, resolution, epochs, batch_size, seed, progress, lr, width)
    finally:
        torch.set_num_threads(previous)


def _train(train_dir, test_dir, resolution, epochs, batch_size, seed, progress, lr, width):
    x_train, y_train = load_split(train_dir, resolution, progress)
    x_test, y_test = load_split(test_dir, resolution, progress)
    return fit_attribute_classifier(x_train, y_train, x_test, y_test, _to_float, augment_images,
                                    epochs, batch_size, seed, progress, lr, width)


def augment_images(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Tiny brightness shift + pixel noise on (B, 3, R, R): never moves, flips or recolours a shape
    (the noise also makes it less brittle on generated images, which are never this clean)."""
    x = x + (torch.rand(len(x), 1, 1, 1, generator=g) - 0.5) * 0.1
    return x + torch.randn(x.shape, generator=g) * 0.04


def fit_attribute_classifier(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    to_float,
    augment,
    epochs: int = 3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    lr: float = 3e-3,
    width: int = 32,
    desc: str = "attribute classifier",
) -> tuple[AttributeClassifier, dict[str, float]]:
    """The training loop on in-memory tensors, shared by the image and audio classifiers.

    x_*: (N, C, R, R) in whatever compact dtype the caller stores (uint8 images, float16 mels);
    to_float(batch) turns a batch into float32 model inputs in [-1, 1]. y_*: (N, 4) long class
    indices in NAMES order. augment(x, generator) -> x is applied to each float training batch.
    C and R are read off x_train. Returns the model (eval mode) and its accuracy on x_test.
    """
    if x_train.ndim != 4 or x_train.shape[-1] != x_train.shape[-2] or x_test.shape[1:] != x_train.shape[1:]:
        raise GanError(f"attribute classifier: expected (N, C, R, R) train and test inputs of one shape, "
                       f"got {tuple(x_train.shape)} and {tuple(x_test.shape)}")
    classes = _class_lists()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)  # shuffling and augmentation, independent of the global RNG
    model = AttributeClassifier(x_train.shape[-1], tuple(len(classes[n]) for n in NAMES), NAMES, width=width,
                                in_channels=x_train.shape[1])
    model = model.to(memory_format=torch.channels_last).train()  # NHWC convs are faster on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    bar = tqdm(total=total, desc=desc, disable=not progress)
    for epoch in range(epochs):
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            x = augment(to_float(x_train[idx]), g)  # (B, C, R, R)
            x = x.contiguous(memory_format=torch.channels_last)
            with cpu_autocast():
                logits = model(x)
            y = y_train[idx]  # (B, 4)
            loss = sum(F.cross_entropy(logits[n], y[:, j]) for j, n in enumerate(NAMES))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
            bar.update()
    bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, _accuracy(predict_attributes(model, to_float(x_test)), y_test)


# ---------------------------------------------------------------------------------------------
# Prediction and accuracy


@torch.no_grad()
def predict_attributes(model: AttributeClassifier, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """(N, C, R, R) inputs in [-1, 1] (C = in_channels: 3 for images) -> attribute -> (N,) class indices."""
    r, c = model.config.resolution, model.config.in_channels
    if images.ndim != 4 or tuple(images.shape[1:]) != (c, r, r):
        raise GanError(
            f"attribute classifier: expected images of shape (N, {c}, {r}, {r}) in [-1, 1], got {tuple(images.shape)}; "
            f"use a classifier trained at the images' resolution (load_or_train_classifier(..., resolution=R))"
        )
    model.eval()
    preds = {n: [] for n in model.config.attribute_names}
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(model.device, torch.float32))
        for n in preds:
            preds[n].append(logits[n].argmax(1).cpu())
    return {n: torch.cat(p) if p else torch.empty(0, dtype=torch.long) for n, p in preds.items()}


def _accuracy(preds: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """Per-attribute accuracy, their "mean", and "all" = share of images with every attribute right."""
    right = torch.stack([preds[n] == labels[:, j] for j, n in enumerate(NAMES)], dim=1)  # (N, 4)
    acc = {n: right[:, j].float().mean().item() for j, n in enumerate(NAMES)}
    acc["mean"] = sum(acc[n] for n in NAMES) / len(NAMES)
    acc["all"] = right.all(1).float().mean().item()
    return acc


def attribute_accuracy(model: AttributeClassifier, images: torch.Tensor, attributes: list[dict[str, str]]) -> dict[str, float]:
    """How often generated `images` show the attributes their prompts asked for."""
    if len(images) != len(attributes) or not len(attributes):
        raise GanError(f"attribute accuracy: got {len(images)} images for {len(attributes)} attribute dicts; need one each")
    return _accuracy(predict_attributes(model, images), attribute_indices(attributes))


# ---------------------------------------------------------------------------------------------
# Cache: train once per dataset, next to it


def dataset_fingerprint(dataset_root: Path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        path = Path(dataset_root) / split / "metadata.jsonl"
        if not path.is_file():
            raise GanError(f"attribute classifier: {path} not found; expected a shapes dataset with train/ and test/")
        h.update(split.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_classifier(folder: Path, train, what: str, extra_files: dict[str, str] | None = None
                      ) -> tuple[AttributeClassifier, dict]:
    """A classifier cached in `folder` (save_pretrained + accuracy.json), else `train()` -> (model, accuracy)
    and cached. A damaged cache is retrained rather than fatal; the cache is written to a sibling
    temp folder and renamed, so a killed run never leaves a half-written one."""
    if (folder / "accuracy.json").is_file():
        try:
            model = AttributeClassifier.from_pretrained(folder).eval()
            return model, json.loads((folder / "accuracy.json").read_text())
        except (OSError, ValueError, RuntimeError) as e:
            import warnings

            warnings.warn(f"{what} cache {folder} is unreadable ({e}); retraining")
    model, acc = train()
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "accuracy.json").write_text(json.dumps(acc, indent=2) + "\n")
    for name, text in (extra_files or {}).items():  # for a person reading the cache
        (tmp / name).write_text(text)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return model, acc


def load_or_train_classifier(dataset_root: Path, resolution: int = 32, progress: bool = True) -> tuple[AttributeClassifier, dict]:
    """The classifier for this dataset and resolution: from dataset_root/.cache, else trained and cached."""
    root = Path(dataset_root)
    folder = root / ".cache" / f"attribute-classifier-{dataset_fingerprint(root)}-{resolution}"
    return cached_classifier(
        folder, lambda: train_attribute_classifier(root / "train", root / "test", resolution, progress=progress),
        "attribute classifier")
