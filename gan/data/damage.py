"""Damage masks for video repair: reproducible holes of several kinds, as bool tensors (T, H, W).

True marks a hole. A repair model sees `apply_damage(frames, mask)` plus the mask itself: pixels
under the mask are set to 0 (mid-gray in [-1, 1]) and must never be read as content - their value
is a placeholder, not evidence. Losses and metrics that score "inside the hole" use the mask too.

Coverage is the share of a frame's pixels that are holes. Every kind keeps it in a documented
range (COVERAGE, per frame, for the frames not wholly dropped) and make_mask enforces it, so an
evaluation at "strokes" difficulty always means the same amount of damage:

    strokes         5-40%  free-form brush strokes (random-walk polylines), the same in every frame
    moving_strokes  5-40%  such strokes sliding together at a constant velocity
    boxes           5-30%  one rectangle moving smoothly (bouncing off the edges)
    dropped_frames  1 or 2 whole frames are holes (100%), never all; the others are untouched
    scratches       1-20%  thin near-vertical film scratches plus small blotches, new every frame
    mixed           1-60%  union of two different kinds above (dropped frames stay 100%)

Mask files follow the DAVIS/E2FGVI convention: one PNG per frame, named like the frame,
nonzero = hole.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan.errors import GanError

KINDS = ("strokes", "moving_strokes", "boxes", "dropped_frames", "scratches", "mixed")
COVERAGE: dict[str, tuple[float, float]] = {  # per frame, frames not wholly dropped
    "strokes": (0.05, 0.40),
    "moving_strokes": (0.05, 0.40),
    "boxes": (0.05, 0.30),
    "dropped_frames": (0.0, 0.0),
    "scratches": (0.01, 0.20),
    "mixed": (0.01, 0.60),
}
MAX_DROPPED = 2
TRIES = 200  # elements tried while filling a mask up to its target coverage


def _hw(size, low: int = 8) -> tuple[int, int]:
    """`size` as (H, W): an int means square; a pair is (height, width)."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and low <= v <= 8192
                  for v in pair))
    if not ok:
        raise GanError(f"mask size must be an integer or an (height, width) pair, each in "
                       f"{low}..8192 px, got {size!r}")
    return int(pair[0]), int(pair[1])


def _polyline(h: int, w: int, pts: np.ndarray, radius: float) -> np.ndarray:
    """Pixels whose centre lies within `radius` of the polyline through pts (N, 2) in (x, y)
    pixel units (a single point gives a disc). (H, W) bool"""
    mask = np.zeros((h, w), bool)
    segments = list(zip(pts[:-1], pts[1:])) if len(pts) > 1 else [(pts[0], pts[0])]
    for (x0, y0), (x1, y1) in segments:
        # Only the segment's bounding box, grown by the radius, can be touched.
        c0 = max(0, int(np.floor(min(x0, x1) - radius)))
        c1 = min(w, int(np.ceil(max(x0, x1) + radius)) + 1)
        r0 = max(0, int(np.floor(min(y0, y1) - radius)))
        r1 = min(h, int(np.ceil(max(y0, y1) + radius)) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        xs = np.arange(c0, c1)[None, :] + 0.5
        ys = np.arange(r0, r1)[:, None] + 0.5
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0, 1)
        d2 = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2
        mask[r0:r1, c0:c1] |= d2 <= radius * radius
    return mask


def _stroke(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """A free-form brush stroke: (vertices (N, 2), radius), DeepFill-v2 style random walk."""
    s = min(h, w)
    x, y, angle = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * np.pi)
    pts = [(x, y)]
    for _ in range(int(rng.integers(3, 8))):
        angle += rng.uniform(-0.8, 0.8)
        step = rng.uniform(0.08, 0.2) * s
        x = float(np.clip(x + step * np.cos(angle), 0, w))
        y = float(np.clip(y + step * np.sin(angle), 0, h))
        pts.append((x, y))
    return np.array(pts), max(0.75, rng.uniform(0.02, 0.06) * s)


def _fill(draw, frames: int, h: int, w: int, target: float, high: float) -> np.ndarray:
    """Add elements from draw() (each (T or 1, H, W) bool) until every frame reaches `target`
    coverage, skipping any element that would push a frame above `high`. (T, H, W) bool"""
    mask = np.zeros((frames, h, w), bool)
    for _ in range(TRIES):
        new = mask | draw()
        cov = new.mean(axis=(1, 2))
        if cov.max() <= high:
            mask = new
            if cov.min() >= target:
                break
    return mask


def _strokes(rng, frames, h, w, moving: bool) -> np.ndarray:
    low, high = COVERAGE["strokes"]
    s = min(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(1, 3) * s / 32 * moving
    shifts = (np.arange(frames) - (frames - 1) / 2)[:, None] * velocity  # (T, 2), 0 mid-clip

    def draw():
        pts, radius = _stroke(rng, h, w)
        if not moving:
            return _polyline(h, w, pts, radius)[None]  # (1, H, W), broadcast over frames
        return np.stack([_polyline(h, w, pts + d, radius) for d in shifts])  # (T, H, W)

    return _fill(draw, frames, h, w, rng.uniform(low + 0.01, high - 0.05), high)


def _bounce(p: np.ndarray, top: float) -> np.ndarray:
    """Reflect positions into [0, top], like a ball between two walls."""
    if top <= 0:
        return np.zeros_like(p)
    q = np.mod(p, 2 * top)
    return np.where(q <= top, q, 2 * top - q)


def _boxes(rng, frames, h, w) -> np.ndarray:
    low, high = COVERAGE["boxes"]
    area = rng.uniform(low + 0.02, high - 0.03) * h * w
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    bw = int(np.clip(round(np.sqrt(area * aspect)), 1, w))
    bh = int(np.clip(round(area / bw), 1, h))
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(1, 3) * min(h, w) / 32
    t = np.arange(frames)
    xs = _bounce(rng.uniform(0, w - bw) + t * speed * np.cos(angle), w - bw).round().astype(int)
    ys = _bounce(rng.uniform(0, h - bh) + t * speed * np.sin(angle), h - bh).round().astype(int)
    mask = np.zeros((frames, h, w), bool)
    for i in range(frames):
        mask[i, ys[i]:ys[i] + bh, xs[i]:xs[i] + bw] = True
    return mask


def _dropped(rng, frames, h, w) -> np.ndarray:
    if frames < 2:
        raise GanError("damage kind 'dropped_frames' needs at least 2 frames (it never drops "
                       f"them all), got frames={frames}")
    k = int(rng.integers(1, min(MAX_DROPPED, frames - 1) + 1))
    mask = np.zeros((frames, h, w), bool)
    mask[rng.choice(frames, size=k, replace=False)] = True
    return mask


def _scratches(rng, frames, h, w) -> np.ndarray:
    low, high = COVERAGE["scratches"]
    s = min(h, w)
    line_radius = max(0.5, 0.004 * w)

    def draw():
        if rng.random() < 0.6:  # a thin near-vertical line over most of the height
            x = rng.uniform(0, w)
            pts = np.array([(x, rng.uniform(0, 0.3 * h)),
                            (x + rng.uniform(-0.03, 0.03) * w, rng.uniform(0.7 * h, h))])
            return _polyline(h, w, pts, line_radius)[None]
        blotch = np.array([(rng.uniform(0, w), rng.uniform(0, h))])
        return _polyline(h, w, blotch, max(0.5, rng.uniform(0.015, 0.06) * s))[None]

    return np.concatenate([_fill(draw, 1, h, w, rng.uniform(low + 0.005, 0.12), high)
                           for _ in range(frames)])


def _mixed(rng, frames, h, w) -> np.ndarray:
    base = [k for k in KINDS if k != "mixed" and (k != "dropped_frames" or frames >= 2)]
    first, second = rng.choice(len(base), size=2, replace=False)
    return _make(base[first], rng, frames, h, w) | _make(base[second], rng, frames, h, w)


_MAKERS = {"strokes": lambda rng, t, h, w: _strokes(rng, t, h, w, moving=False),
           "moving_strokes": lambda rng, t, h, w: _strokes(rng, t, h, w, moving=True),
           "boxes": _boxes, "dropped_frames": _dropped, "scratches": _scratches, "mixed": _mixed}


def _in_range(kind: str, mask: np.ndarray) -> bool:
    cov = mask.mean(axis=(1, 2))  # (T,)
    dropped = cov == 1.0
    if kind == "dropped_frames":
        return 1 <= dropped.sum() <= min(MAX_DROPPED, len(cov) - 1) and not cov[~dropped].any()
    if dropped.any() and kind != "mixed":
        return False
    low, high = COVERAGE[kind]
    rest = cov[~dropped]
    return not dropped.all() and bool(np.all((rest >= low) & (rest <= high)))


def _make(kind, rng, frames, h, w) -> np.ndarray:
    for _ in range(20):  # a miss is rare (e.g. a mixed union above 60%); draw again
        mask = _MAKERS[kind](rng, frames, h, w)
        if _in_range(kind, mask):
            return mask
    raise RuntimeError(f"could not draw a {kind!r} mask of {frames}x{h}x{w} within coverage "
                       f"{COVERAGE[kind]} (a bug in gan.data.damage)")


def make_mask(kind: str, frames: int, size, seed: int | None = None,
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """A damage mask of `kind` for `frames` frames of `size` (int = square, or (H, W)).
    The same seed gives the same mask; pass `rng` instead to draw from a running generator.
    Returns a (T, H, W) bool tensor, True = hole."""
    if kind not in KINDS:
        raise GanError(f"damage kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
        raise GanError(f"make_mask: frames must be a positive integer, got {frames!r}")
    if seed is not None and rng is not None:
        raise GanError("make_mask: pass either seed or rng, not both")
    h, w = _hw(size)
    rng = rng if rng is not None else np.random.default_rng(seed)
    return torch.from_numpy(_make(kind, rng, int(frames), h, w))


def frame_coverage(mask: torch.Tensor) -> torch.Tensor:
    """Share of hole pixels in each frame of a (T, H, W) mask. (T,) float"""
    return torch.as_tensor(mask).bool().flatten(-2).float().mean(-1)


def coverage(mask: torch.Tensor) -> float:
    """Share of hole pixels in the whole mask (all frames)."""
    return float(torch.as_tensor(mask).bool().float().mean())


def apply_damage(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Frames (..., T, 3, H, W) in [-1, 1] with every hole pixel set to 0 in all channels.

    The value 0 is only a neutral placeholder: models get the mask as well and must treat the
    pixels under it as unknown, never as content."""
    mask = torch.as_tensor(mask)
    if frames.dim() < 4 or frames.shape[-3] != 3 or mask.dtype != torch.bool \
            or tuple(mask.shape) != tuple(frames.shape[:-3]) + tuple(frames.shape[-2:]):
        raise GanError(f"apply_damage: expected frames (T, 3, H, W) and a bool mask (T, H, W), "
                       f"got frames {tuple(frames.shape)} and mask {tuple(mask.shape)} "
                       f"{mask.dtype}")
    return frames.masked_fill(mask.to(frames.device).unsqueeze(-3), 0.0)


def _mask_name(name: str) -> str:
    return Path(name).stem + ".png"


def save_masks(mask: torch.Tensor, folder: str | Path, names: list[str]) -> None:
    """One PNG per frame in `folder`, named after the frame (00000.jpg -> 00000.png), 255 = hole."""
    mask = torch.as_tensor(mask)
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise GanError(f"save_masks: expected a (T, H, W) bool mask, got {tuple(mask.shape)} "
                       f"{mask.dtype}")
    if len(names) != mask.shape[0]:
        raise GanError(f"save_masks {folder}: {len(names)} names for {mask.shape[0]} mask frames")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(mask.numpy(), names):
        Image.fromarray(frame.astype(np.uint8) * 255, "L").save(folder / _mask_name(name))


def _read_mask(path: Path) -> np.ndarray:
    """Nonzero = hole, whatever the mode: palette indices (DAVIS), gray, 1-bit or RGB(A)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "LA", "PA"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
        raise GanError(f"cannot read mask {path}: {e}") from None
    return arr.reshape(arr.shape[0], arr.shape[1], -1).any(-1)  # (H, W)


def load_masks(folder: str | Path, names: list[str], size=None) -> torch.Tensor:
    """The masks of frames `names` from `folder` (see save_masks). (T, H, W) bool

    `size` (int = square, or (H, W)) is the size every mask must have; None = as the first one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanError(f"mask folder not found: {folder}")
    wanted = [_mask_name(n) for n in names]
    missing = [n for n in wanted if not (folder / n).is_file()]
    if missing:
        raise GanError(f"{len(missing)} of {len(wanted)} mask file(s) missing in {folder}: "
                       + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                       + " (expected one PNG per frame, named like the frame)")
    extra = sorted(set(p.name for p in folder.glob("*.png")) - set(wanted))
    if extra:
        raise GanError(f"{folder} holds {len(wanted) + len(extra)} mask files for {len(wanted)} "
                       f"frames; not matching any frame: " + ", ".join(extra[:10]))
    expected = None if size is None else _hw(size, low=1)
    out = []
    for name in wanted:
        m = _read_mask(folder / name)
        expected = expected or m.shape
        if m.shape != expected:
            raise GanError(f"mask {folder / name} is {m.shape[1]}x{m.shape[0]} (WxH), expected "
                           f"{expected[1]}x{expected[0]}")
        out.append(m)
    return torch.from_numpy(np.stack(out))


def fixed_eval_masks(n_clips: int, frames: int, size, seed: int = 1234) -> list:
    """The evaluation set: [(kind, mask)] for clip i = 0..n_clips-1, kinds cycling through
    KINDS. Mask i depends only on (seed, i, frames, size), so a longer list extends a shorter."""
    if not isinstance(n_clips, (int, np.integer)) or n_clips < 0:
        raise GanError(f"fixed_eval_masks: n_clips must be a non-negative integer, got {n_clips!r}")
    return [(KINDS[i % len(KINDS)],
             make_mask(KINDS[i % len(KINDS)], frames, size, rng=np.random.default_rng([seed, i])))
            for i in range(n_clips)]
