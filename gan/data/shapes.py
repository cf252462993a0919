"""The built-in "shapes" dataset: one anti-aliased shape per image, a caption and a sound.

Four attributes, drawn uniformly and independently, describe every sample:
color (8), shape (3), size (2) and position (5). The picture, the caption and the sound all
encode the same four, so text-, audio- and image-conditioned models can be checked against a
ground truth that is measurable from pixels. The full spec lives in datasets/shapes.md.

Captions come in "seen" wordings (train, and half of test) and "heldout" wordings (a template
and/or synonyms never used in train; the other half of test), to measure whether a text
condition generalises beyond the exact phrases it was trained on.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from gan.data.audio import sonify, write_wav
from gan.data.metadata import write_metadata
from gan.errors import GanError

VERSION = 1
SAMPLE_RATE = 16000
AUDIO_SECONDS = 1.0

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 230),
    "purple": (150, 60, 210),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.25, "large": 0.45}  # bounding-box side / canvas side
POSITIONS: dict[str, tuple[float, float]] = {  # box centre (x, y) / canvas side
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
    "center": (0.5, 0.5),
}
ATTRIBUTES: dict[str, list[str]] = {
    "color": list(COLORS),
    "shape": list(SHAPES),
    "size": list(SIZES),
    "position": list(POSITIONS),
}

BACKGROUND_MAX = 40  # background gray level is uniform in 0..40
COLOR_JITTER = 8  # per-channel, integer, +-
SIZE_JITTER = 0.10  # multiplicative, +-
POSITION_JITTER = 0.05  # per coordinate, fraction of the canvas, +-

# ---------------------------------------------------------------------------------------------
# Captions. Each class has (seen synonyms, held-out synonyms); train only ever uses seen ones.

SYNONYMS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "color": {
        "red": (["red", "scarlet"], ["crimson"]),
        "orange": (["orange"], ["amber"]),
        "yellow": (["yellow"], ["golden"]),
        "green": (["green"], ["emerald"]),
        "cyan": (["cyan", "aqua"], ["turquoise"]),
        "blue": (["blue"], ["azure"]),
        "purple": (["purple"], ["violet"]),
        "white": (["white"], ["ivory"]),
    },
    "shape": {
        "circle": (["circle", "disc"], ["dot"]),
        "square": (["square", "box"], ["block"]),
        "triangle": (["triangle", "wedge"], ["pyramid"]),
    },
    "size": {
        "small": (["small", "little"], ["tiny"]),
        "large": (["large", "big"], ["huge"]),
    },
    "position": {
        "top left": (["top left", "upper left", "top left corner"], ["northwest corner"]),
        "top right": (["top right", "upper right", "top right corner"], ["northeast corner"]),
        "bottom left": (["bottom left", "lower left", "bottom left corner"], ["southwest corner"]),
        "bottom right": (["bottom right", "lower right", "bottom right corner"],
                         ["southeast corner"]),
        "center": (["center", "middle"], ["centre"]),
    },
}
TEMPLATES_SEEN: tuple[str, ...] = (
    "a {size} {color} {shape} in the {position}",
    "{position}: a {color} {shape}, {size}",
    "there is a {size} {color} {shape} at the {position}",
    "a {color} {shape} in the {position}, {size}",
    "in the {position} there is a {size} {color} {shape}",
    "a {size} {shape} in {color}, located in the {position}",
)
TEMPLATES_HELDOUT: tuple[str, ...] = (
    "the {position} shows a {size} {color} {shape}",
    "a {shape} that is {size} and {color}, placed in the {position}",
)
WORDINGS = ("seen", "heldout")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_attrs(attrs: dict) -> None:
    if not isinstance(attrs, dict):
        raise GanError(f"shapes attributes must be a dict with keys {list(ATTRIBUTES)}, "
                       f"got {attrs!r}")
    for key, values in ATTRIBUTES.items():
        if attrs.get(key) not in values:
            raise GanError(f"shapes attribute {key!r} is {attrs.get(key)!r}; "
                           f"expected one of {values}")


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """Draw color, shape, size and position uniformly and independently."""
    return {key: values[int(rng.integers(len(values)))] for key, values in ATTRIBUTES.items()}


# ---------------------------------------------------------------------------------------------
# Rendering


def _coverage(shape: str, cx: float, cy: float, side: float, size: int, ss: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, from ss x ss samples per pixel. (size, size)"""
    t = (np.arange(size * ss) + 0.5) / ss  # sub-pixel centres in pixel units, (S,)
    x, y = t[None, :], t[:, None]  # (1, S), (S, 1)
    h = side / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif shape == "square":
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    else:  # isosceles triangle, apex at the top centre, base along the bottom of the box
        inside = (y <= cy + h) & (np.abs(x - cx) <= (y - (cy - h)) / 2)
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))  # (size, size)


def render(attrs: dict[str, str], size: int, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """Draw one sample. Returns the RGB image and the drawn parameters
    {"background": int, "rgb": (r, g, b), "side_px": float, "center_px": (x, y)}."""
    _check_attrs(attrs)
    if not _is_int(size) or not 16 <= size <= 512:
        raise GanError(f"shapes image size must be an integer in 16..512 px, got {size!r}")
    size = int(size)
    background = int(rng.integers(0, BACKGROUND_MAX + 1))
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLORS[attrs["color"]]) + jitter, 0, 255))
    side = SIZES[attrs["size"]] * size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    fx, fy = POSITIONS[attrs["position"]]
    dx, dy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    cx, cy = (fx + dx) * size, (fy + dy) * size

    ss = max(4, min(8, 256 // size))  # supersampling: 8x at 32 px, 4x at 64 px and up
    cov = _coverage(attrs["shape"], cx, cy, side, size, ss)[..., None]  # (H, W, 1)
    fg = np.array(rgb, dtype=np.float64)  # (3,)
    pixels = background + cov * (fg - background)  # (H, W, 3)
    image = Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB")
    params = {"background": background, "rgb": rgb, "side_px": float(side),
              "center_px": (float(cx), float(cy))}
    return image, params


# ---------------------------------------------------------------------------------------------
# Captions


def _choose(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def make_caption(attrs: dict[str, str], rng: np.random.Generator, wording: str = "seen") -> str:
    """An English caption naming all four attributes.

    "seen" uses only train templates and synonyms; "heldout" uses a held-out template and/or at
    least one held-out synonym (never all-seen).
    """
    _check_attrs(attrs)
    if wording not in WORDINGS:
        raise GanError(f"caption wording must be one of {WORDINGS}, got {wording!r}")
    if wording == "seen":
        template = _choose(rng, TEMPLATES_SEEN)
        heldout_words = set()
    else:
        heldout_template = bool(rng.integers(2))
        template = _choose(rng, TEMPLATES_HELDOUT if heldout_template else TEMPLATES_SEEN)
        heldout_words = {key for key in ATTRIBUTES if rng.integers(2)}
        if not heldout_template and not heldout_words:  # must differ from train somehow
            heldout_words = {_choose(rng, list(ATTRIBUTES))}
    words = {}
    for key in ATTRIBUTES:
        seen, held = SYNONYMS[key][attrs[key]]
        words[key] = _choose(rng, held if key in heldout_words else seen)
    text = template.format(**words)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "a orange" -> "an orange"


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


def _phrase_patterns() -> dict[str, re.Pattern]:
    """One regex per attribute, longest phrases first, with a named group per class."""
    patterns = {}
    for key, classes in SYNONYMS.items():
        phrases = sorted(((p, c) for c, (seen, held) in classes.items() for p in seen + held),
                         key=lambda pc: -len(pc[0]))
        patterns[key] = (re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in phrases) + r")\b"),
                         dict(phrases))
    return patterns


_PATTERNS = _phrase_patterns()


def parse_caption(text: str) -> dict[str, str] | None:
    """Recover {color, shape, size, position} from a caption, or None when any is missing or
    named more than once with conflicting values."""
    if not isinstance(text, str):
        return None
    norm = _normalise(text)
    attrs = {}
    for key, (pattern, phrase_to_class) in _PATTERNS.items():
        found = {phrase_to_class[m] for m in pattern.findall(norm)}
        if len(found) != 1:
            return None
        attrs[key] = found.pop()
    return attrs


def caption_words(wording: str) -> tuple[tuple[str, ...], set[str]]:
    """(templates, synonym phrases) of a wording, e.g. to check a caption uses none held out."""
    if wording not in WORDINGS:
        raise GanError(f"caption wording must be one of {WORDINGS}, got {wording!r}")
    i = WORDINGS.index(wording)
    phrases = {p for classes in SYNONYMS.values() for pair in classes.values() for p in pair[i]}
    return (TEMPLATES_SEEN, TEMPLATES_HELDOUT)[i], phrases


# ---------------------------------------------------------------------------------------------
# Writing a dataset


def _write_split(split_dir: Path, n: int, size: int, rng: np.random.Generator, split: str,
                 progress: bool) -> None:
    (split_dir / "images").mkdir(parents=True)
    (split_dir / "audio").mkdir()
    digits = max(6, len(str(n - 1)))
    rows = []
    for i in tqdm(range(n), desc=f"shapes {split}", unit="img", disable=not progress):
        attrs = sample_attributes(rng)
        image, _ = render(attrs, size, rng)
        # Test alternates seen/held-out wordings so both halves have the same attribute mix.
        wording = "heldout" if split == "test" and i % 2 == 1 else "seen"
        text = make_caption(attrs, rng, wording)
        wave = sonify(attrs, rng, SAMPLE_RATE, AUDIO_SECONDS)
        name = f"{i:0{digits}d}"
        image.save(split_dir / "images" / f"{name}.png")
        write_wav(split_dir / "audio" / f"{name}.wav", wave, SAMPLE_RATE)
        rows.append({"file_name": f"images/{name}.png", "text": text,
                     "audio_file": f"audio/{name}.wav", "attributes": attrs, "wording": wording})
    write_metadata(split_dir, rows)


def write_shapes(out: str | Path, n_train: int, n_test: int, size: int = 32, seed: int = 0,
                 progress: bool = True) -> None:
    """Generate the shapes dataset into `out` (train/, test/, info.json), deterministically.

    Everything is written to a hidden sibling folder and renamed into place at the end, so an
    interrupted run never leaves a folder that looks like a finished dataset.
    """
    out = Path(out)
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 0)):
        if not _is_int(value) or value < low:
            raise GanError(f"write_shapes: {name} must be an integer >= {low}, got {value!r}")
    if not _is_int(size) or not 16 <= size <= 512:
        raise GanError(f"write_shapes: size must be an integer in 16..512 px, got {size!r}")
    if not _is_int(seed) or seed < 0:
        raise GanError(f"write_shapes: seed must be a non-negative integer, got {seed!r}")
    n_train, n_test, size, seed = int(n_train), int(n_test), int(size), int(seed)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanError(f"{out} already exists and is not empty; choose a new --out folder "
                       "or delete it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    # Independent streams: changing n_train must not change a single test sample.
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    try:
        tmp.mkdir()
        for split, n, seq in (("train", n_train, train_seq), ("test", n_test, test_seq)):
            if n:
                _write_split(tmp / split, n, size, np.random.default_rng(seq), split, progress)
        info = {"generator": "gan.data.shapes", "version": VERSION, "size": size, "seed": seed,
                "counts": {"train": n_train, "test": n_test}, "attributes": ATTRIBUTES,
                "audio": {"sample_rate": SAMPLE_RATE, "seconds": AUDIO_SECONDS}}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a directory portably
        os.replace(tmp, out)
    except BaseException:  # Ctrl-C included: leave nothing behind that could be mistaken for data
        shutil.rmtree(tmp, ignore_errors=True)
        raise
