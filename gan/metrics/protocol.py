"""Evaluation protocols: everything that decides a metric's number, in one strict record.

A protocol file (`evaluate/*.toml`) fixes the metrics, feature backbone, sample counts,
reference split, seed and truncation, so a number in the README is reproduced by one command:
    gan eval --protocol evaluate/t2i_shapes.toml --checkpoint runs/t2i_shapes
Flags given on the command line override the file; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from gan.config import apply_values, read_toml
from gan.errors import GanError

# Metrics computed from backbone features (one feature pass serves all of them) ...
FEATURE_METRICS = ("fid", "kid", "is", "pr")
# ... and metrics of the built-in data that read generated pixels directly.
PIXEL_METRICS = ("attr", "diversity")
# ... and those of video repair (gan.repair.evaluate), against the baselines on fixed masks.
REPAIR_METRICS = ("psnr", "ssim", "hole_psnr", "hole_ssim", "temporal", "vfid")
# ... and those only a joint (image + sound) generator has (gan.joint.evaluate; it also takes fid, attr).
JOINT_METRICS = ("fad", "consistency")
METRICS = FEATURE_METRICS + PIXEL_METRICS + REPAIR_METRICS + JOINT_METRICS
RESIZE_MODES = ("tf-bilinear", "antialias")


@dataclass
class EvalProtocol:
    name: str = ""  # protocol name, copied into every result
    description: str = ""  # what the protocol reproduces (e.g. "FID-30k on COCO val2014, as in the papers")
    metrics: list[str] = field(default_factory=lambda: ["attr"])  # any of METRICS
    data: str = ""  # reference split folder with metadata.jsonl (captions for generation, real images)
    num: int = 10000  # generated images (captions of the reference split, cycled)
    num_real: int = 0  # reference images used; 0 = the whole split
    backbone: str = "auto"  # "inception" | "dataset" | "torchvision:<model>" | a registered name; auto = dataset
    #                         for data with attribute labels (the built-in shapes), inception otherwise
    resize: str = "tf-bilinear"  # inception input resize: "tf-bilinear" (reference-compatible) | "antialias"
    inception_weights: str = ""  # local Inception weights file; "" = $GAN_INCEPTION_WEIGHTS or the torch hub cache
    backbone_weights: str = ""  # weights file for a torchvision backbone
    seed: int = 0  # noise seed of the generated samples (and KID's subset draws)
    truncation: float = 0.0  # truncation of the noise; 0 = none
    batch_size: int = 64  # generation and feature batch size
    kid_subset_size: int = 1000  # KID: samples per subset
    kid_subsets: int = 100  # KID: number of subsets
    pr_k: int = 3  # precision/recall: k of the k-NN manifolds (Kynkäänniemi et al.)
    dc_k: int = 5  # density/coverage: k (Naeem et al.)
    is_splits: int = 10  # Inception Score: number of splits
    allow_rank_deficient: bool = False  # compute FID even when samples <= feature dim (biased; recorded)
    condition: list[str] = field(default_factory=list)  # which row fields drive the generator (text, audio,
    #                                                      image); [] = the modalities it was trained on
    audio_encoder: str = ""  # zero-shot: an encoder aligned to a text generator's space (gan align) for audio
    image_encoder: str = ""  # zero-shot: the same for images
    zero_shot_route: str = "direct"  # "direct" (the aligned vector) | "projected" (onto the captions' subspace) | "caption" (nearest training caption)


def load_protocol(path: str | Path | None = None, overrides: dict | None = None) -> EvalProtocol:
    """Defaults, then the protocol file, then the command line's values (None = not given)."""
    proto = EvalProtocol()
    if path is not None:
        apply_values(proto, read_toml(path, "--protocol file"), str(path))
        if not proto.name:
            proto.name = Path(path).stem
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    apply_values(proto, given, "command line")
    validate_protocol(proto)
    return proto


def validate_protocol(p: EvalProtocol) -> None:
    unknown = [m for m in p.metrics if m not in METRICS]
    if unknown or not p.metrics:
        raise GanError(f"metrics: unknown {unknown or 'empty list'}; available: {', '.join(METRICS)}")
    if p.resize not in RESIZE_MODES:
        raise GanError(f"resize: expected one of {', '.join(RESIZE_MODES)}, got {p.resize!r}")
    for key in ("num", "batch_size", "kid_subset_size", "kid_subsets", "pr_k", "dc_k", "is_splits"):
        if getattr(p, key) < 1:
            raise GanError(f"{key}: expected a positive integer, got {getattr(p, key)}")
    if any(m not in ("text", "audio", "image") for m in p.condition):
        raise GanError(f"condition: expected names among text, audio, image; got {p.condition}")
    if p.num_real < 0 or p.truncation < 0:
        raise GanError("num_real and truncation must be >= 0 (0 = all / none)")


def to_dict(p: EvalProtocol) -> dict:
    return dataclasses.asdict(p)
