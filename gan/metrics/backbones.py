"""Feature backbones: the networks whose features FID, KID, IS and precision/recall compare.

A number like FID means nothing without the network that produced the features, its weights and
how images were resized for it, so every backbone carries that provenance (name, weights SHA-256,
resize mode, what its numbers are comparable with) and `gan eval` writes it next to the metric.

Built in:
- `inception`: the standard FID Inception-v3 (torch-fidelity's port of the TF graph), from a local
  weights file; nothing is downloaded. Only this backbone with the reference weights and the
  "tf-bilinear" resize gives numbers comparable with published FIDs.
- `dataset`: the attribute classifier of the built-in shapes data (trained and cached on first
  use), the offline default there; not comparable with Inception FID. Its logits are the 240
  joint attribute classes, so IS works offline too.
- `torchvision:<model>`: any torchvision classifier, penultimate features, local weights file.
- anything added with `register_backbone`.

Weights files are read without running code: `.safetensors`, or `.pth`/`.pt` through
`torch.load(weights_only=True)`; keys and shapes are checked against the architecture first.
"""

from __future__ import annotations

import abc
import inspect
import io
import math
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gan.errors import GanError
from gan.weights import check_state_dict, file_sha256, load_weights_file, state_dict_sha256

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
# hub naming convention: the part after the last "-" is the start of the file's SHA-256
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_ENV = "GAN_INCEPTION_WEIGHTS"
RESIZE_MODES = {
    "tf-bilinear": "TF1-style bilinear to 299 without antialiasing (torch-fidelity); matches published FIDs",
    "antialias": "antialiased bilinear to 299 (torchmetrics >= 1.8 default); NOT comparable with published FIDs",
}
BACKBONE_WEIGHTS_FLAG = "--backbone-weights"  # the `gan eval` option that passes `weights`


class FeatureBackbone(nn.Module, abc.ABC):
    """Base class: uint8 images in, {"features": (B, D), "logits": (B, K) when num_classes} out.

    Subclass it for your own backbone (see `register_backbone`): set the attributes below in
    `__init__` and implement `forward`; `check_images` gives users a readable error. (A plain
    nn.Module with the same attributes and methods is accepted too.)
    """

    name: str = "custom"
    feature_dim: int = 0  # D: length of the pooled features used by FID/KID/PR
    num_classes: int | None = None  # K: logits width for IS; None = no logits, IS unavailable
    weights_sha256: str = ""  # of the weights file, or of the state dict bytes for in-memory weights
    resize: str = ""  # how images reach the input size (recorded in provenance)
    input_size: int | None = None  # side the images are resized to; None = taken as they come
    weights_path: str | None = None
    comparable_with: str = "only results of this same backbone, weights and resize"

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (B, 3, H, W) -> {"features": (B, D), "logits": (B, K) when num_classes}."""

    def check_images(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
            raise GanError(f"backbone '{self.name}': expected uint8 images of shape (B, 3, H, W), got {got}")

    @property
    def device(self) -> torch.device:
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "weights": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "resize": self.resize,
            "input_size": self.input_size,
            "comparable_with": self.comparable_with,
        }


# ---------------------------------------------------------------------------------------------
# inception: torchmetrics' NoTrainInceptionV3 (torch-fidelity's network) from a checked local file


def _inception_skeleton(device: str | torch.device = "meta") -> nn.Module:
    """torch-fidelity's FID Inception with freshly initialised parameters and no weights file.

    Its constructor insists on loading weights (downloading them, or unpickling a file with
    weights_only=False); this subclass hands it an empty dict we serialised ourselves and skips
    that load, so the architecture comes from torch-fidelity's own code. On "meta" it costs
    nothing and gives the expected keys and shapes.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device(device):
        return Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)


def write_random_inception_weights(path: str | Path, seed: int = 0) -> str:
    """A .safetensors file of random weights in exactly the FID Inception's layout (for tests and
    offline pipeline checks; its numbers mean nothing). Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise GanError(f"write_random_inception_weights: {path} must end in .safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _inception_skeleton("cpu")
        for m in net.modules():  # variance-preserving, so features are O(1) rather than ~1e-8
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def find_inception_weights(explicit: str | None = None) -> Path:
    """explicit path -> $GAN_INCEPTION_WEIGHTS -> torch hub cache; else a GanError saying how to get it."""
    if explicit:
        if not Path(explicit).is_file():
            raise GanError(f"--inception-weights {explicit}: no such file")
        return Path(explicit)
    env = os.environ.get(INCEPTION_ENV, "")
    if env:
        if not Path(env).is_file():
            raise GanError(f"{INCEPTION_ENV}={env}: no such file")
        return Path(env)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if cached.is_file():
        return cached
    raise GanError(
        f"backbone 'inception' needs the FID Inception weights file {INCEPTION_FILE} (about 95 MB), which "
        f"is never downloaded automatically. Get it from {INCEPTION_URL} and then either pass "
        f"--inception-weights PATH, set {INCEPTION_ENV}=PATH, or put it at {cached}"
    )


class InceptionBackbone(FeatureBackbone):
    """The standard FID Inception-v3: 2048-d pool features and 1008 unbiased logits (for IS)."""

    def __init__(self, weights: str | None = None, resize: str = "tf-bilinear"):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = find_inception_weights(weights)  # first, so a missing file fails before any work
        sha = file_sha256(path)
        state = load_weights_file(path, "Inception weights")
        expected = _inception_skeleton().state_dict()
        state = check_state_dict(state, expected, f"Inception weights {path}",
                                 optional=lambda k: k.endswith("num_batches_tracked"))
        # torch-fidelity unpickles its weights with weights_only=False, so it only ever gets bytes
        # we wrote ourselves from tensors already checked
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        del state
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=buffer, antialias=resize == "antialias")
        self.name, self.feature_dim, self.num_classes, self.input_size = "inception", 2048, 1008, 299
        self.resize, self.weights_path, self.weights_sha256 = resize, str(Path(path).resolve()), sha
        reference = sha.startswith(INCEPTION_SHA256_PREFIX)
        if not reference:
            self.comparable_with = "only results with these same (non-reference) Inception weights"
        elif resize == "tf-bilinear":
            self.comparable_with = "published FIDs (torch-fidelity / TF1 Inception, tf-bilinear resize)"
        else:
            self.comparable_with = ("other 'antialias' Inception results (torchmetrics >= 1.8 default); "
                                    "NOT comparable with published FIDs")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_images(images)
        # torchmetrics' forward returns only the first feature; this one pass gives both
        features, logits = self.net._torch_fidelity_forward(images.to(self.device))
        return {"features": features.float(), "logits": logits.float()}  # (B, 2048), (B, 1008)


# ---------------------------------------------------------------------------------------------
# dataset: the built-in data's attribute classifier


class DatasetBackbone(FeatureBackbone):
    """Penultimate (128-d) features of the shapes attribute classifier; offline.

    Its logits are over the joint attribute combinations (8 colors x 3 shapes x 2 sizes x 5
    positions = 240 classes): the sum of the heads' log-softmaxes, so their softmax is the product
    of the per-attribute probabilities and an Inception Score over them is bounded by 240.
    """

    def __init__(self, dataset_root: str | Path, resolution: int = 32, progress: bool = True):
        super().__init__()
        from gan.metrics.attributes import load_or_train_classifier

        root = Path(dataset_root)
        self.classifier, self.real_accuracy = load_or_train_classifier(root, resolution=resolution, progress=progress)
        self.classifier.eval().requires_grad_(False)
        self.name = "dataset"
        self.num_classes = math.prod(self.classifier.config.num_classes)
        self.feature_dim = self.classifier.config.feature_dim
        self.input_size = self.classifier.config.resolution
        self.resize = f"antialiased bilinear to {self.input_size} when sizes differ"
        self.weights_path = f"{root.resolve()}/.cache (attribute classifier, trained on {root.name}/train)"
        self.weights_sha256 = state_dict_sha256(self.classifier.state_dict())
        self.comparable_with = ("results with this dataset's classifier only: the offline default for the "
                                "built-in data, NOT comparable with Inception FID")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_images(images)
        x = images.to(self.device, torch.float32).div(127.5).sub(1.0)  # (B, 3, H, W) in [-1, 1]
        r = self.input_size
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        h = self.classifier.features(x)  # (B, 128)
        joint = torch.zeros(len(x), 1, device=x.device)  # (B, 1): log p of the combination so far
        for head in self.classifier.heads.values():
            logp = F.log_softmax(head(h).float(), dim=1)  # (B, K_attr)
            joint = (joint[:, :, None] + logp[:, None, :]).flatten(1)  # (B, K_so_far * K_attr)
        return {"features": h.float(), "logits": joint}  # (B, 128), (B, 240)

    def provenance(self) -> dict:
        return {**super().provenance(), "classifier_real_test_accuracy": self.real_accuracy}


# ---------------------------------------------------------------------------------------------
# torchvision:<model>: a classifier's penultimate features, its head kept for logits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# builder options that torchvision sets itself when it loads its own weights
_TORCHVISION_OPTIONS = {
    "inception_v3": {"init_weights": False, "transform_input": True, "aux_logits": True},
    "googlenet": {"init_weights": False, "transform_input": True, "aux_logits": True},
}


class TorchvisionBackbone(FeatureBackbone):
    """A torchvision classification model; the last Linear layer is the head, its input the features."""

    def __init__(self, model: str, weights: str | None = None, allow_random_weights: bool = False):
        super().__init__()
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if model not in known:
            raise GanError(f"backbone 'torchvision:{model}': unknown model; torchvision's classifiers are "
                           f"{', '.join(sorted(known))}")
        if weights is None and not allow_random_weights:
            try:
                url = f" (torchvision's own: {torchvision.models.get_model_weights(model).DEFAULT.url})"
            except (ValueError, AttributeError):
                url = ""
            raise GanError(f"backbone 'torchvision:{model}' needs a local weights file{url}: pass "
                           f"{BACKBONE_WEIGHTS_FLAG} PATH. Random weights would give meaningless numbers")
        net = torchvision.models.get_model(model, weights=None, **_TORCHVISION_OPTIONS.get(model, {}))
        if weights is not None:
            state = load_weights_file(weights, f"{BACKBONE_WEIGHTS_FLAG} {weights}")
            net.load_state_dict(check_state_dict(state, net.state_dict(), f"{BACKBONE_WEIGHTS_FLAG} {weights}"))
            self.weights_path, self.weights_sha256 = str(Path(weights).resolve()), file_sha256(weights)
        else:
            self.weights_path, self.weights_sha256 = None, state_dict_sha256(net.state_dict())
        heads = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
        if not heads:
            raise GanError(f"backbone 'torchvision:{model}' has no Linear classification head to take features before")
        parent, _, child = heads[-1].rpartition(".")
        self.head = net.get_submodule(heads[-1])
        setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
        self.net = net.eval().requires_grad_(False)
        self.head.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.name, self.input_size = f"torchvision:{model}", 224
        self.feature_dim, self.num_classes = self.head.in_features, self.head.out_features
        self.resize = "antialiased bilinear to 224, ImageNet normalisation"
        if weights is None:
            self.comparable_with = "nothing: RANDOM weights (tests only)"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_images(images)
        x = images.to(self.device, torch.float32).div(255.0)  # (B, 3, H, W) in [0, 1]
        if x.shape[-2:] != (224, 224):
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        features = self.net((x - self.mean) / self.std)  # (B, D)
        return {"features": features.float(), "logits": self.head(features).float()}  # (B, D), (B, K)


# ---------------------------------------------------------------------------------------------
# Registry and construction

_CUSTOM: dict[str, Callable[..., FeatureBackbone]] = {}
_BUILTIN = ("inception", "dataset")
_REQUIRED = ("name", "feature_dim", "weights_sha256", "resize", "provenance")  # num_classes: None if absent


def register_backbone(name: str, factory: Callable[..., FeatureBackbone]) -> None:
    """Make `build_backbone(name, ...)` (and `gan eval --backbone name`) use `factory`.

    `factory` returns a FeatureBackbone (or an nn.Module with the same attributes); it is called with those of build_backbone's keywords
    (inception_weights, weights, resize, dataset_root, resolution, device, progress) that its
    signature names, or all of them when it takes **kwargs. Registering a name again replaces it.
    """
    if not isinstance(name, str) or not name.strip() or name in _BUILTIN or name.startswith("torchvision:"):
        raise GanError(f"register_backbone: name {name!r} must be a non-empty string other than "
                       f"{', '.join(_BUILTIN)} and torchvision:<model>")
    if not callable(factory):
        raise GanError(f"register_backbone('{name}'): factory must be callable, got {type(factory).__name__}")
    _CUSTOM[name] = factory


def available_backbones() -> list[str]:
    return [*_BUILTIN, "torchvision:<model>", *sorted(_CUSTOM)]


def build_backbone(name: str, *, inception_weights: str | None = None, resize: str = "tf-bilinear",
                   dataset_root: str | None = None, resolution: int | None = None, device="cpu",
                   weights: str | None = None, allow_random_weights: bool = False,
                   progress: bool = True) -> FeatureBackbone:
    """The named backbone in eval mode on `device`.

    `resize` applies to `inception` only ("tf-bilinear" or "antialias"); the other backbones have
    one fixed resize each, recorded in their provenance. `weights` is the weights file of a
    torchvision or registered backbone; `allow_random_weights` lets torchvision models run
    without one (tests only).
    """
    if resize not in RESIZE_MODES:
        raise GanError(f"resize: expected one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if name == "inception":
        backbone = InceptionBackbone(inception_weights, resize)
    elif name == "dataset":
        if dataset_root is None:
            raise GanError("backbone 'dataset' needs the dataset root (the folder holding train/ and test/)")
        backbone = DatasetBackbone(dataset_root, resolution or 32, progress)
    elif name.startswith("torchvision:"):
        backbone = TorchvisionBackbone(name.split(":", 1)[1], weights, allow_random_weights)
    elif name in _CUSTOM:
        backbone = _call_factory(name, _CUSTOM[name], dict(
            inception_weights=inception_weights, weights=weights, resize=resize, dataset_root=dataset_root,
            resolution=resolution, device=device, progress=progress))
    else:
        raise GanError(f"backbone {name!r}: unknown; available: {', '.join(available_backbones())}")
    return backbone.to(device).eval()


def _call_factory(name: str, factory: Callable, kwargs: dict) -> FeatureBackbone:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: give them everything
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = {p.name for p in params}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    backbone = factory(**kwargs)
    if not isinstance(backbone, nn.Module):
        raise GanError(f"backbone {name!r}: its factory returned a {type(backbone).__name__}; "
                       f"expected a FeatureBackbone (or an nn.Module with its attributes)")
    lacking = [a for a in _REQUIRED if not hasattr(backbone, a)]
    if lacking:
        raise GanError(f"backbone {name!r}: its {type(backbone).__name__} lacks {', '.join(lacking)}; "
                       f"a backbone needs {', '.join(_REQUIRED)} (see FeatureBackbone)")
    if not isinstance(backbone.feature_dim, int) or backbone.feature_dim <= 0:
        raise GanError(f"backbone {name!r}: feature_dim must be a positive int, got {backbone.feature_dim!r}")
    return backbone
