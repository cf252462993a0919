"""Configuration: dataclasses are the single source of truth.

Defaults live here; a TOML file (`configs/*.toml`) overrides them; `--set a.b=c` overrides
that. Every key is checked: an unknown key or a value of the wrong type is a `GanError`
naming the key and listing what is valid.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan.errors import GanError


@dataclass
class DataConfig:
    root: str = "datasets/shapes"  # dataset root holding split folders (train/, test/) with metadata.jsonl
    train_split: str = "train"  # split folder used for training
    eval_split: str = "test"  # split folder used for sample prompts and evaluation
    resolution: int = 32  # images are center-cropped and resized to this (power of two >= 16)
    num_workers: int = 0  # DataLoader workers; 0 = load in the main process (fine for preloaded data)
    attribute_groups: int = 0  # batches made of runs of this many rows sharing all `attributes` (for model.mbstd_group; image tasks); 0 = random batches
    on_bad_sample: str = "error"  # bad training rows (corrupt image/WAV, bad metadata line): "error" | "skip" (drop them, list them in RUN/bad_samples.txt)


@dataclass
class TextConfig:
    encoder: str = "minilm"  # "minilm" | "learned" | a HuggingFace model id or local path
    use_tokens: bool = True  # feed word-level token features to the generator's cross-attention


@dataclass
class ConditionConfig:
    modalities: list[str] = field(default_factory=lambda: ["text"])  # what conditions G and D: text, audio, image
    fusion: str = "auto"  # "auto" (none for one modality, concat for several) | "none" | "concat" | "weighted" | "attention" | "gated"
    fusion_dim: int = 256  # width of the fused sentence-level condition
    fusion_token_dim: int = 256  # width of the fused token sequence
    weights: list[float] = field(default_factory=list)  # "weighted": fixed lambda per modality (modalities' order); [] = learned
    modality_dropout: float = 0.0  # per-sample chance a modality is replaced by its learned null during training
    audio_encoder: str = "scratch"  # "scratch" (trained with the GAN) | "torchaudio:<BUNDLE>" | folder of an aligned encoder (frozen)
    image_encoder: str = "scratch"  # "scratch" (trained with the GAN) | folder of an aligned encoder (frozen)
    encoder_width: int = 32  # base width of scratch audio/image encoders
    encoder_dim: int = 128  # pooled and token width of scratch audio/image encoders


@dataclass
class RepairConfig:
    frames: int = 8  # frames per training window (longer clips are repaired in overlapping windows)
    damage: list[str] = field(default_factory=lambda: [
        "strokes", "moving_strokes", "boxes", "dropped_frames", "scratches", "mixed"])  # kinds drawn per clip
    hole_weight: float = 1.0  # L1 inside the holes
    valid_weight: float = 1.0  # L1 on the known pixels (of the raw prediction, before compositing)
    adv_weight: float = 0.01  # hinge adversarial term of the temporal PatchGAN (E2FGVI/ProPainter: 0.01)
    temporal_weight: float = 0.0  # L1 between the repaired and true frame-to-frame changes (the temporal metric as a loss); 0 = off
    perceptual_weight: float = 0.0  # VGG16 perceptual loss; > 0 needs vgg_weights
    vgg_weights: str = ""  # local vgg16-397923af.pth (never downloaded)
    conditioned: bool = False  # feed the clip's condition.modalities (text and/or audio) to G through FiLM
    propagate: bool = False  # give G each hole pixel's value from the nearest frame where it is visible (a flow-free propagation prior)


@dataclass
class JointConfig:
    conditioned: bool = True  # condition both outputs on condition.modalities (captions); false = unconditional
    caption_dropout: float = 0.2  # share of training rows given the zero "no caption" condition, so one model samples with and without a prompt
    pair_weight: float = 1.0  # joint head: weight of "real image + another row's real sound" scored as fake
    blend_share: float = 0.0  # share of G's captioned rows given a blend of two rows' captions (vectors interpolated, words of both), judged by D for realism and pairing only (as if uncaptioned): picture and sound must agree even on a caption between the training ones, as held-out wordings are; 0 = off
    free_pair_weight: float = 0.0  # joint head: weight of the re-paired real rows scored once more against NO caption, so the head's caption-free part (all that judges uncaptioned and blended fakes) learns which sound belongs to which picture; 0 = off
    word_dropout: float = 0.0  # share of a captioned row's word tokens hidden from G's attention in training (each token independently), so no single word or template position carries an attribute alone; 0 = off
    near_miss_weight: float = 0.0  # joint head: weight of "real image + the real sound of a row differing in exactly one attribute" scored as fake (needs `attributes` in the metadata); 0 = off
    audio_channels: int = 16  # base width of G's audio head and D's audio branch (at the spectrogram's size)
    trunk_resolution: int = 8  # side of G's last shared feature map, where the image and audio heads branch
    head_style: str = "w"  # what modulates G's two heads: "w" (the mapping's style, caption included) | "trunk" (a style read from the trunk's last map alone: the trunk decides for both)
    audio_source: str = "trunk"  # what G's audio head grows from: "trunk" (the shared map) | "image" (the generated picture, read back: the sound is made from what was drawn)
    sonify_weight: float = 0.0  # with audio_source = "image": L1 between the sound G's audio head makes of a REAL picture and that picture's real log-mel, so the data's pairs teach the picture-to-sound reading directly; 0 = adversarial signal only
    attention_resolutions: list[int] = field(default_factory=lambda: [4, 8])  # trunk sizes that attend to the caption's word tokens (with text.use_tokens)
    sample_rate: int = 16000  # Hz; the dataset's sounds are resampled to it
    seconds: float = 1.0  # length of each sound
    n_fft: int = 1024  # STFT size of the log-mel spectrogram
    hop_length: int = 250  # STFT hop in samples (1 s at 16 kHz -> 64 frames)
    n_mels: int = 64  # mel bins = spectrogram frames (G draws a square M x M map); a power of two >= 16
    f_max: float = 4000.0  # highest mel frequency in Hz (the shapes' pitches and low harmonics lie below)
    griffin_lim_iters: int = 32  # Griffin-Lim iterations when spectrograms become sound (sampling, evaluation)


@dataclass
class ModelConfig:
    z_dim: int = 128  # noise dimension
    g_channels: int = 32  # generator base width (channels at the output resolution)
    g_max_channels: int = 256  # generator width cap (at low resolution)
    d_channels: int = 32  # discriminator base width
    d_max_channels: int = 256  # discriminator width cap
    attention_resolutions: list[int] = field(default_factory=lambda: [16])  # where G attends to words
    spectral_norm: bool = False  # spectral normalisation in D
    mbstd_group: int = 0  # D's minibatch-std layer over groups of this many consecutive rows (image tasks: pair with data.attribute_groups; joint: random rows); 0 = off
    mbstd_spatial: bool = False  # that std as a 4x4 map (where the group's images differ), not one number; needs mbstd_group
    pack: int = 1  # PacGAN: D judges runs of this many rows of one attribute set stacked on channels (needs data.attribute_groups a multiple of it); 1 = one image at a time
    cond_norm: bool = False  # layer-normalise the pooled condition in G and D (unit-norm sentence vectors are ~30x quieter than z)
    upsample: str = "nearest"  # how G's blocks double the resolution: "nearest" | "bilinear" (text-to-image and joint generators)


@dataclass
class LossConfig:
    kind: str = "hinge"  # "hinge" | "nonsaturating"
    mismatch_weight: float = 0.5  # weight w of the matching-aware term (real image, wrong caption = fake); D's fake term gets 1 - w; in [0, 1), 0 = off
    gp: str = "r1"  # gradient penalty on real pairs: "r1" | "ma_gp" (DF-GAN's, w.r.t. image and caption) | "none"
    gp_weight: float = 0.05  # R1's gamma/2, or MA-GP's k
    gp_every: int = 8  # lazy regularisation: apply the penalty every N D steps (scaled by N)
    diffaugment: str = "translation,cutout"  # DiffAugment policy applied to real and fake; "" = off
    diffaugment_per_group: bool = False  # one transform per model.mbstd_group rows, so D's minibatch std sees the images' differences, not the augmentation's
    mode_seeking_weight: float = 0.0  # MSGAN term on pairs of fakes sharing a caption (against mode collapse); 0 = off
    mode_seeking_fraction: float = 0.25  # share of the batch that gets a second noise draw for that term


@dataclass
class OptimConfig:
    g_lr: float = 2e-4  # generator Adam learning rate
    d_lr: float = 4e-4  # discriminator Adam learning rate (TTUR)
    beta1: float = 0.0
    beta2: float = 0.9
    text_lr: float = 2e-4  # learning rate of trainable condition modules (learned text, scratch audio/image encoders, fusion)


@dataclass
class TrainConfig:
    seed: int = 0  # seeds weights, noise, data order and augmentation
    batch_size: int = 64  # per process
    grad_accum: int = 1  # gradient accumulation steps (wraps both G and D)
    max_steps: int = 3000  # optimizer steps (after accumulation)
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. The run saves and exports when it ends
    max_cpu_minutes: float = 0.0  # CPU-time budget of the main process (all its threads, time.process_time); 0 = none. Unlike wall time it does not shrink when other jobs share the machine
    mixed_precision: str = "auto"  # "auto" (bf16 where the hardware runs it fast: AVX-512 CPUs, bf16 GPUs; else no) | "no" | "bf16" | "fp16"
    channels_last: bool = True  # NHWC memory format (faster convolutions on CPU, in bf16 and in fp32)
    ema_decay: float = 0.999  # generator EMA decay; 0 = no EMA (export the live generator)
    log_every: int = 25  # steps between scalar logs
    sample_every: int = 500  # steps between fixed-prompt sample grids; 0 = never
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    checkpoints_total_limit: int = 2  # keep at most this many checkpoint-<step> folders; 0 = all
    output_dir: str = "runs"  # parent folder of run folders
    run_name: str = ""  # run folder name; "" = the config's name
    tracker: str = "tensorboard"  # "tensorboard" | "none"
    sample_prompts: list[str] = field(default_factory=list)  # fixed prompts for grids; [] = from eval split
    eval_every: int = 0  # steps between metric evaluations of the EMA generator on the eval split; 0 = never
    eval_metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "attr"])  # as in `gan eval --metrics`
    eval_num: int = 1000  # generated images per evaluation
    eval_backbone: str = "auto"  # feature backbone (auto = dataset for labelled built-in data, else inception)
    on_nonfinite: str = "stop"  # non-finite loss/gradient: "stop" (clear error) | "skip" (drop that step, halve the lrs)
    max_nonfinite_skips: int = 5  # "skip": stop with an error after this many consecutive dropped steps


@dataclass
class Config:
    name: str = "t2i"  # experiment name (default run folder name)
    task: str = "text-to-image"
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# text-to-image and conditional-image: an image from condition.modalities; video-repair: fill the
# damaged regions of clips (gan.training.repair_steps); joint: an image and its sound from one
# latent, optionally captioned (gan.training.joint_steps)
TASKS = ("text-to-image", "conditional-image", "video-repair", "joint")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check `value` against the annotation `typ`; ints are accepted where floats are expected."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise GanError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(typ):
            try:
                return _coerce(value, option, key)
            except GanError:
                pass
        raise GanError(f"config key '{key}': {value!r} is not a {typ}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise GanError(f"config key '{key}': {value} is too large for a float") from None
    if typ is bool and not isinstance(value, bool):
        raise GanError(f"config key '{key}': expected true or false, got {value!r}")
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise GanError(f"config key '{key}': expected an integer, got {value!r}")
    if not isinstance(value, typ):
        raise GanError(f"config key '{key}': expected {typ.__name__}, got {value!r}")
    return value


def _apply(obj: Any, values: dict, prefix: str, source: str) -> None:
    types_ = _field_types(type(obj))
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in types_:
            valid = ", ".join(f"{prefix}{k}" for k in types_)
            raise GanError(f"{source}: unknown config key '{dotted}'. Valid keys here: {valid}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise GanError(f"{source}: '{dotted}' is a section; expected a table like [{dotted}]")
            _apply(current, value, f"{dotted}.", source)
        else:
            try:
                setattr(obj, key, _coerce(value, types_[key], dotted))
            except GanError as e:
                raise GanError(f"{source}: {e}") from None


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise GanError(f"--set '{item}': expected KEY=VALUE, e.g. --set train.max_steps=500")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, RecursionError):  # TOMLDecodeError, >4300-digit integers, absurd nesting
        value = raw  # bare words are strings: --set text.encoder=learned
    return key.split("."), value


def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file as a dict; a missing, undecodable or malformed file is a GanError naming it."""
    path = Path(path)
    if not path.is_file():
        raise GanError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:  # a ValueError too, so it is caught first
        raise GanError(f"{path}: not a UTF-8 text file") from None
    except (ValueError, RecursionError) as e:  # TOMLDecodeError, >4300-digit integers, absurd nesting
        raise GanError(f"{path}: malformed TOML: {e}") from None


def apply_values(obj: Any, values: dict, source: str) -> None:
    """Set dataclass fields from a (nested) dict with the same strict checks as config files."""
    _apply(obj, values, "", source)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the TOML file at `path`, then each `a.b=c` override, all validated."""
    cfg = Config()
    if path is not None:
        _apply(cfg, read_toml(path, "config file"), "", str(path))
    for item in overrides:
        parts, value = _parse_override(item)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        _apply(cfg, nested, "", f"--set {item}")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks the type system cannot express."""
    def bad(key: str, expected: str) -> GanError:
        return GanError(f"config key '{key}': expected {expected}")

    if cfg.task not in TASKS:
        raise bad("task", f"one of {', '.join(TASKS)}, got {cfg.task!r}")
    r = cfg.data.resolution
    if r < 16 or r & (r - 1):
        raise bad("data.resolution", f"a power of two >= 16, got {r}")
    if cfg.loss.kind not in ("hinge", "nonsaturating"):
        raise bad("loss.kind", f"'hinge' or 'nonsaturating', got {cfg.loss.kind!r}")
    if cfg.model.upsample not in ("nearest", "bilinear"):
        raise bad("model.upsample", f"'nearest' or 'bilinear', got {cfg.model.upsample!r}")
    if cfg.loss.gp not in ("ma_gp", "r1", "none"):
        raise bad("loss.gp", f"'ma_gp', 'r1' or 'none', got {cfg.loss.gp!r}")
    if cfg.train.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise bad("train.mixed_precision", f"'auto', 'no', 'bf16' or 'fp16', got {cfg.train.mixed_precision!r}")
    if cfg.train.tracker not in ("tensorboard", "none"):
        raise bad("train.tracker", f"'tensorboard' or 'none', got {cfg.train.tracker!r}")
    if cfg.data.on_bad_sample not in ("error", "skip"):
        raise bad("data.on_bad_sample", f"'error' or 'skip', got {cfg.data.on_bad_sample!r}")
    if cfg.train.on_nonfinite not in ("stop", "skip"):
        raise bad("train.on_nonfinite", f"'stop' or 'skip', got {cfg.train.on_nonfinite!r}")
    for key in ("train.max_minutes", "train.max_cpu_minutes"):
        if not getattr(cfg.train, key.split(".")[1]) >= 0:
            raise bad(key, "minutes >= 0 (0 = no limit)")
    for key in ("train.batch_size", "train.grad_accum", "train.max_steps", "loss.gp_every",
                "train.max_nonfinite_skips", "train.log_every", "train.checkpoint_every"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise bad(key, "a positive integer")
    for key in ("data.attribute_groups", "model.mbstd_group"):
        section, name = key.split(".")
        n = getattr(getattr(cfg, section), name)
        if n == 1 or n < 0 or (n and cfg.train.batch_size % n):
            raise bad(key, f"0 (off) or a group size >= 2 dividing train.batch_size ({cfg.train.batch_size}); got {n}")
        if key == "model.mbstd_group" and cfg.task == "joint":
            continue  # the joint D has the layer too (over random rows: there are no grouped joint batches)
        if n and cfg.task not in ("text-to-image", "conditional-image"):
            raise bad(key, f"0 for task '{cfg.task}' (only the image tasks' D has the minibatch-std layer)")
    pk = cfg.model.pack
    if pk != 1 and (pk < 1 or not cfg.data.attribute_groups or cfg.data.attribute_groups % pk):
        raise bad("model.pack", f"1 (off) or a size >= 2 dividing data.attribute_groups "
                                f"({cfg.data.attribute_groups}; a pack must share one caption's attributes); got {pk}")
    if pk != 1 and (cfg.loss.gp == "ma_gp" or cfg.model.mbstd_group):
        raise bad("model.pack", "1 with loss.gp = 'ma_gp' or model.mbstd_group (each judges single images)")
    for key in ("model.mbstd_spatial", "loss.diffaugment_per_group"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) and not cfg.model.mbstd_group:
            raise bad(key, "false unless model.mbstd_group is set (it acts on the minibatch-std groups)")
    c = cfg.condition
    mods = c.modalities
    if not mods or len(set(mods)) != len(mods) or any(m not in ("text", "audio", "image") for m in mods):
        raise bad("condition.modalities", f"distinct names among text, audio, image; got {mods}")
    if c.fusion not in ("auto", "none", "concat", "weighted", "attention", "gated"):
        raise bad("condition.fusion", f"auto, none, concat, weighted, attention or gated; got {c.fusion!r}")
    if c.fusion == "none" and len(mods) > 1:
        raise bad("condition.fusion", f"a fusion method for {len(mods)} modalities ('none' takes exactly one)")
    if c.weights and (c.fusion != "weighted" or len(c.weights) != len(mods)):
        raise bad("condition.weights", f"one lambda per modality {mods} with fusion = 'weighted'; got {c.weights}")
    if cfg.train.sample_prompts and "text" not in mods:
        raise bad("train.sample_prompts", f"no prompts: this model is conditioned on {mods}, not text "
                  f"(its grids use the eval split's own clips/pictures)")
    if not 0.0 <= c.modality_dropout < 1.0:
        raise bad("condition.modality_dropout", f"a probability in [0, 1); got {c.modality_dropout}")
    if cfg.task == "video-repair":
        from gan.data.damage import KINDS

        bad_kinds = [k for k in cfg.repair.damage if k not in KINDS]
        if bad_kinds or not cfg.repair.damage:
            raise bad("repair.damage", f"a non-empty list of {', '.join(KINDS)}; got {cfg.repair.damage}")
        if cfg.repair.frames < 2 or r % 4:
            raise bad("repair.frames / data.resolution", "at least 2 frames and a resolution divisible by 4")
        if cfg.repair.perceptual_weight > 0 and not cfg.repair.vgg_weights:
            raise bad("repair.vgg_weights", "a local vgg16-397923af.pth when repair.perceptual_weight > 0")
        if cfg.repair.conditioned and "image" in cfg.condition.modalities:
            raise bad("condition.modalities", "text and/or audio for conditioned repair (the clip is the image)")
        if cfg.train.eval_every:
            raise bad("train.eval_every", "0 for video-repair (evaluate with gan eval --metrics psnr,ssim,...)")
        if cfg.model.cond_norm:
            raise bad("model.cond_norm", "false for video-repair (its FiLM layers read the condition directly)")
        if cfg.model.upsample != "nearest":
            raise bad("model.upsample", "'nearest' for video-repair (its generator has its own up-sampling)")
    if cfg.task == "joint":
        j = cfg.joint
        if j.n_mels < 16 or j.n_mels & (j.n_mels - 1):
            raise bad("joint.n_mels", f"a power of two >= 16 (it is also the number of frames), got {j.n_mels}")
        if not 0.0 <= j.caption_dropout < 1.0:
            raise bad("joint.caption_dropout", f"a probability in [0, 1), got {j.caption_dropout}")
        if j.head_style not in ("w", "trunk"):
            raise bad("joint.head_style", f"'w' or 'trunk', got {j.head_style!r}")
        if j.audio_source not in ("trunk", "image"):
            raise bad("joint.audio_source", f"'trunk' or 'image', got {j.audio_source!r}")
        if j.sonify_weight < 0 or (j.sonify_weight > 0 and j.audio_source != "image"):
            raise bad("joint.sonify_weight", f">= 0, and 0 unless joint.audio_source = 'image' (it trains the audio head's "
                      f"reading of pictures), got {j.sonify_weight} with audio_source {j.audio_source!r}")
        if not 0.0 <= j.word_dropout < 1.0:
            raise bad("joint.word_dropout", f"a probability in [0, 1), got {j.word_dropout}")
        if j.word_dropout > 0 and not (j.conditioned and cfg.text.use_tokens and "text" in cfg.condition.modalities):
            raise bad("joint.word_dropout", "0 unless G reads the caption's words (joint.conditioned, text.use_tokens and "
                      "'text' in condition.modalities): it hides word tokens")
        if not 0.0 <= j.blend_share <= 1.0:
            raise bad("joint.blend_share", f"a share in [0, 1], got {j.blend_share}")
        if j.blend_share > 0 and not j.conditioned:
            raise bad("joint.blend_share", "0 for an unconditional model (joint.conditioned = false): there are no captions to blend")
        if j.free_pair_weight > 0 and not j.conditioned:
            raise bad("joint.free_pair_weight", "0 for an unconditional model (joint.conditioned = false): its pairs are "
                      "already judged without a caption (joint.pair_weight)")
        for key in ("pair_weight", "near_miss_weight", "free_pair_weight"):
            if getattr(j, key) < 0:
                raise bad(f"joint.{key}", f"a weight >= 0, got {getattr(j, key)}")
        for key in ("model.mbstd_spatial", "loss.diffaugment_per_group"):
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name):
                raise bad(key, "false for the joint task (its minibatch std is one number per group, over random rows)")
        if cfg.loss.gp == "ma_gp":
            raise bad("loss.gp", "'r1' or 'none' for the joint task (MA-GP is defined for one image and a caption)")
        if j.conditioned and any(m != "text" for m in cfg.condition.modalities):
            raise bad("condition.modalities", "['text'] for a captioned joint model (its sound is an output)")
        sizes = [4 * 2**i for i in range(8) if 4 * 2**i <= j.trunk_resolution]
        if j.conditioned and cfg.text.use_tokens and (not j.attention_resolutions
                                                      or any(r not in sizes for r in j.attention_resolutions)):
            raise bad("joint.attention_resolutions", f"a non-empty list of trunk sizes {sizes} (joint.trunk_resolution = "
                      f"{j.trunk_resolution}) when text.use_tokens = true; got {j.attention_resolutions}")
        if cfg.train.eval_every:
            raise bad("train.eval_every", "0 for the joint task (evaluate with gan eval --metrics fid,fad,consistency)")
    if cfg.train.eval_every < 0 or cfg.train.eval_num < 1:
        raise bad("train.eval_every / train.eval_num", "eval_every >= 0 (0 = never) and eval_num >= 1")
    allowed = ("fid", "kid", "is", "pr", "attr")
    if any(m not in allowed for m in cfg.train.eval_metrics):
        raise bad("train.eval_metrics", f"a list of {', '.join(allowed)}; got {cfg.train.eval_metrics}")
    if not 0.0 < cfg.loss.mode_seeking_fraction <= 1.0:
        raise bad("loss.mode_seeking_fraction", f"a number in (0, 1], got {cfg.loss.mode_seeking_fraction}")
    if not 0.0 <= cfg.loss.mismatch_weight < 1.0:  # at 1 the fake term vanishes: D never learns fakes are fake
        raise bad("loss.mismatch_weight", f"a number in [0, 1) (D's fake term is weighted 1 - it), got "
                  f"{cfg.loss.mismatch_weight}")
    if cfg.loss.mode_seeking_weight < 0:
        raise bad("loss.mode_seeking_weight", f"a number >= 0, got {cfg.loss.mode_seeking_weight}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise bad("train.ema_decay", f"a number in [0, 1), got {cfg.train.ema_decay}")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML, saved in every run folder so the run can be reproduced."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            # JSON string escapes are valid TOML basic-string escapes; TOML also forbids raw DEL
            return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    top, sections = [], []
    for key, v in to_dict(cfg).items():
        if isinstance(v, dict):
            sections.append(f"\n[{key}]")
            sections += [f"{k} = {value(x)}" for k, x in v.items()]
        else:
            top.append(f"{key} = {value(v)}")
    return "\n".join(top + sections) + "\n"
