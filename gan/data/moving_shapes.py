"""The "moving shapes" dataset: short clips of one shapes-spec shape gliding over a panning texture.

It is the synthetic ground truth for video repair. Every clip has the four shapes attributes
(color, shape, size, start position; same colours, sizes and anti-aliasing as gan/data/shapes.py),
a caption and a sound, plus motion that is measurable from pixels:

- the shape moves on a smooth path: constant speed (1-2 px/frame at 32 px, scaled with the canvas)
  along a heading that turns by a small constant angle per frame, never leaving the canvas;
- the background is a smooth low-frequency gray texture (levels within 0..60) that pans by a
  constant sub-pixel offset per frame, so what a hole hides in one frame is usually visible in
  another - the property that makes temporal repair possible and checkable.

Layout: <out>/<split>/<clip>/00000.png ... plus <out>/<split>/audio/<clip>.wav and
<out>/<split>/metadata.jsonl (one row per clip). The full spec is datasets/moving_shapes.md.
"""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from gan.data.audio import sonify, write_wav
from gan.data.metadata import write_metadata
from gan.data.shapes import (AUDIO_SECONDS, ATTRIBUTES, COLOR_JITTER, COLORS, POSITION_JITTER,
                             POSITIONS, SAMPLE_RATE, SIZE_JITTER, SIZES, _check_attrs, _coverage,
                             _is_int, make_caption, sample_attributes)
from gan.errors import GanError

VERSION = 1
SPEED = (1.0, 2.0)  # shape speed, px/frame at 32 px (scaled by size / 32)
TURN = 0.12  # heading turns by a constant angle drawn in +-TURN rad/frame (a gentle curve)
PAN = (0.5, 1.5)  # background pan, px/frame at 32 px (scaled by size / 32)
TEXTURE_MAX = 60  # background levels stay within 0..TEXTURE_MAX
TEXTURE_WAVES = 3  # the texture is a sum of this many plane waves ...
TEXTURE_CYCLES = (1.5, 4.0)  # ... each with this many cycles across the canvas
PATH_TRIES = 64  # headings tried before the speed is halved (long clips of large shapes)
FRAME_NAME = "{:05d}.png"  # DAVIS-style frame names
DIRECTIONS = ("right", "down and right", "down", "down and left", "left", "up and left", "up",
              "up and right")  # by heading, clockwise from +x in image coordinates (y down)


def _texture(rng: np.random.Generator, size: int):
    """A random smooth gray texture as a function of continuous (x, y) pixel coordinates."""
    cycles = rng.uniform(*TEXTURE_CYCLES, size=TEXTURE_WAVES)
    angles = rng.uniform(0, 2 * np.pi, size=TEXTURE_WAVES)
    freq = np.stack([np.cos(angles), np.sin(angles)], 1) * (cycles / size)[:, None]  # (K, 2)
    phase = rng.uniform(0, 2 * np.pi, size=TEXTURE_WAVES)
    amp = rng.uniform(0.5, 1.0, size=TEXTURE_WAVES)
    low = rng.uniform(0, 25)
    high = rng.uniform(low + 20, TEXTURE_MAX)

    def level(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (x[..., None] * freq[:, 0] + y[..., None] * freq[:, 1]) + phase
        s = (amp * np.cos(arg)).sum(-1) / amp.sum()  # in [-1, 1]
        return low + (high - low) * (s + 1) / 2  # in [low, high], within 0..TEXTURE_MAX

    return level, (float(low), float(high))


def _path(rng: np.random.Generator, start: tuple[float, float], side: float, frames: int,
          size: int) -> tuple[np.ndarray, float, float, float]:
    """Box centres (frames, 2) of a constant-speed, constant-turn path that keeps the whole
    side x side box inside the canvas. Returns (centres, speed, heading, turn)."""
    h = side / 2
    speed = rng.uniform(*SPEED) * size / 32
    while True:
        for _ in range(PATH_TRIES):
            heading, turn = rng.uniform(0, 2 * np.pi), rng.uniform(-TURN, TURN)
            angles = heading + turn * np.arange(frames - 1)  # (frames - 1,)
            steps = speed * np.stack([np.cos(angles), np.sin(angles)], 1)  # (frames - 1, 2)
            centres = np.vstack([start, start + np.cumsum(steps, 0)])  # (frames, 2)
            if np.all((centres >= h) & (centres <= size - h)):
                return centres, float(speed), float(heading), float(turn)
        if speed < 1e-3:  # the start box is inside (shapes spec), so standing still always fits
            return np.tile(start, (frames, 1)), 0.0, 0.0, 0.0
        speed /= 2


def _direction(centres: np.ndarray) -> str:
    """The compass word for the overall displacement, e.g. "up and left"."""
    dx, dy = centres[-1] - centres[0]
    if math.hypot(dx, dy) < 0.5:
        return "nowhere"
    return DIRECTIONS[int(round(math.atan2(dy, dx) / (np.pi / 4))) % 8]


def render_clip(attrs: dict[str, str], frames: int, size: int,
                rng: np.random.Generator) -> tuple[list[Image.Image], dict]:
    """Draw one clip: `frames` RGB images of size x size, and what was drawn:
    {"rgb", "side_px", "centers_px" (one (x, y) box centre per frame), "speed" (px/frame),
    "velocity" (first step, px/frame), "turn" (rad/frame), "direction", "pan" (px/frame),
    "background" ((low, high) texture levels)}."""
    _check_attrs(attrs)
    if not _is_int(size) or not 16 <= size <= 512:
        raise GanError(f"moving shapes: size must be an integer in 16..512 px, got {size!r}")
    if not _is_int(frames) or not 2 <= frames <= 1000:
        raise GanError(f"moving shapes: frames must be an integer in 2..1000, got {frames!r}")
    size, frames = int(size), int(frames)
    # Same draws as shapes.render, so colour, size and start position follow the shapes spec.
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLORS[attrs["color"]]) + jitter, 0, 255))
    side = SIZES[attrs["size"]] * size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    fx, fy = POSITIONS[attrs["position"]]
    dx, dy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    start = np.array([(fx + dx) * size, (fy + dy) * size])
    centres, speed, heading, turn = _path(rng, start, side, frames, size)

    level, background = _texture(rng, size)
    pan_speed, pan_angle = rng.uniform(*PAN) * size / 32, rng.uniform(0, 2 * np.pi)
    pan = np.array([np.cos(pan_angle), np.sin(pan_angle)]) * pan_speed  # (2,) px/frame
    grid = np.arange(size) + 0.5  # pixel centres
    xs, ys = np.meshgrid(grid, grid)  # (H, W) each

    ss = max(4, min(8, 256 // size))  # supersampling, as in shapes.render
    fg = np.array(rgb, dtype=np.float64)  # (3,)
    images = []
    for t, (cx, cy) in enumerate(centres):
        bg = level(xs - pan[0] * t, ys - pan[1] * t)[..., None]  # (H, W, 1): texture moves by pan
        cov = _coverage(attrs["shape"], cx, cy, side, size, ss)[..., None]  # (H, W, 1)
        pixels = bg + cov * (fg - bg)  # (H, W, 3)
        images.append(Image.fromarray(np.rint(pixels).astype(np.uint8), "RGB"))
    info = {"rgb": rgb, "side_px": float(side),
            "centers_px": [(float(x), float(y)) for x, y in centres], "speed": speed,
            "velocity": (speed * math.cos(heading), speed * math.sin(heading)), "turn": turn,
            "direction": _direction(centres), "pan": (float(pan[0]), float(pan[1])),
            "background": background}
    return images, info


def _r(values, digits: int = 4):
    return [round(float(v), digits) for v in values]


def _write_split(split_dir: Path, n: int, frames: int, size: int, rng: np.random.Generator,
                 split: str, progress: bool) -> None:
    (split_dir / "audio").mkdir(parents=True)
    digits = max(6, len(str(n - 1)))
    rows = []
    for i in tqdm(range(n), desc=f"moving shapes {split}", unit="clip", disable=not progress):
        attrs = sample_attributes(rng)
        images, info = render_clip(attrs, frames, size, rng)
        # Test alternates seen/held-out wordings so both halves have the same attribute mix.
        wording = "heldout" if split == "test" and i % 2 == 1 else "seen"
        text = make_caption(attrs, rng, wording)
        if info["direction"] != "nowhere":
            text += f", moving {info['direction']}"
        wave = sonify(attrs, rng, SAMPLE_RATE, AUDIO_SECONDS)
        name = f"{i:0{digits}d}"
        (split_dir / name).mkdir()
        for t, image in enumerate(images):
            image.save(split_dir / name / FRAME_NAME.format(t))
        write_wav(split_dir / "audio" / f"{name}.wav", wave, SAMPLE_RATE)
        motion = {"direction": info["direction"], "speed": round(info["speed"], 4),
                  "velocity": _r(info["velocity"]), "turn": round(info["turn"], 5),
                  "pan": _r(info["pan"]), "centers": [_r(c, 3) for c in info["centers_px"]]}
        # file_name (the first frame) keeps the split a valid image dataset for `gan data check`.
        rows.append({"clip": name, "frames": frames, "file_name": f"{name}/{FRAME_NAME.format(0)}",
                     "text": text, "audio_file": f"audio/{name}.wav", "attributes": attrs,
                     "wording": wording, "motion": motion})
    write_metadata(split_dir, rows)


def write_moving_shapes(out: str | Path, n_train: int, n_test: int, frames: int = 8,
                        size: int = 32, seed: int = 0, progress: bool = True) -> None:
    """Generate the moving-shapes dataset into `out` (train/, test/, info.json), deterministically.

    Written to a hidden sibling folder and renamed into place at the end, so an interrupted run
    never leaves a folder that looks like a finished dataset. Train and test use independent seed
    streams: changing n_train does not change a single test clip.
    """
    out = Path(out)
    checks = (("n_train", n_train, 1, None), ("n_test", n_test, 0, None),
              ("frames", frames, 2, 1000),
              ("size", size, 16, 512), ("seed", seed, 0, None))
    for name, value, low, high in checks:
        if not _is_int(value) or value < low or (high is not None and value > high):
            expected = f">= {low}" if high is None else f"in {low}..{high}"
            raise GanError(f"write_moving_shapes: {name} must be an integer {expected}, "
                           f"got {value!r}")
    n_train, n_test, frames, size, seed = map(int, (n_train, n_test, frames, size, seed))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanError(f"{out} already exists and is not empty; choose a new --out folder "
                       "or delete it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    try:
        tmp.mkdir()
        for split, n, seq in (("train", n_train, train_seq), ("test", n_test, test_seq)):
            if n:
                _write_split(tmp / split, n, frames, size, np.random.default_rng(seq), split,
                             progress)
        info = {"generator": "gan.data.moving_shapes", "version": VERSION, "size": size,
                "frames": frames, "seed": seed, "counts": {"train": n_train, "test": n_test},
                "attributes": ATTRIBUTES,
                "motion": {"speed_px_per_frame": [v * size / 32 for v in SPEED],
                           "turn_rad_per_frame": [-TURN, TURN],
                           "pan_px_per_frame": [v * size / 32 for v in PAN],
                           "background_levels": [0, TEXTURE_MAX]},
                "audio": {"sample_rate": SAMPLE_RATE, "seconds": AUDIO_SECONDS}}
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a directory portably
        os.replace(tmp, out)
    except BaseException:  # Ctrl-C included: leave nothing that could be mistaken for data
        shutil.rmtree(tmp, ignore_errors=True)
        raise
