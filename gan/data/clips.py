"""Video clips without video codecs: frame folders and animated GIF/WebP files, read with Pillow.

torchvision 0.29 has no video I/O, and frame folders are what video-repair benchmarks ship
(DAVIS, YouTube-VOS), so a clip here is a folder of PNG/JPEG frames sorted by name, or an
animated GIF/WebP. Frames come back as uint8 (T, 3, H, W); models see float in [-1, 1].
"""

import math
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gan.data.bad_samples import BadSamplePolicy, Screening
from gan.data.damage import load_masks
from gan.data.dataset import PRELOAD_LIMIT_BYTES, to_rgb
from gan.data.metadata import METADATA
from gan.errors import GanError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
ANIMATED_SUFFIXES = (".gif", ".webp")
GAP = 2  # px of white between clips in side_by_side


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: 2.png < 10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _fit(im: Image.Image, size, resample) -> Image.Image:
    """size None: unchanged; int: centre-crop to a square, resize to size x size;
    (H, W): resize to exactly that (no crop, e.g. 854x480 -> 432x240 as in E2FGVI)."""
    if size is None:
        return im
    if isinstance(size, (tuple, list)):
        h, w = size
        return im if im.size == (w, h) else im.resize((w, h), resample)
    w, h = im.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
    # PIL widens the filter when shrinking, i.e. bicubic with antialiasing.
    return im if side == size else im.resize((size, size), resample)


def _check_size(size, where: str) -> None:
    ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if size is not None and not ok_int(size) and not (
            isinstance(size, (tuple, list)) and len(size) == 2 and all(map(ok_int, size))):
        raise GanError(f"{where}: size must be None, a positive integer or (height, width), "
                       f"got {size!r}")


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise GanError(f"no frames in {folder}: expected PNG/JPEG files named in frame order "
                       "(e.g. 00000.png, 00001.png, ...)")
    return sorted(files, key=lambda p: natural_key(p.name))


def _decode_folder(folder: Path) -> tuple[list[Image.Image], list[str]]:
    images, names = [], []
    for path in _frame_files(folder):
        try:
            with Image.open(path) as im:
                im.load()
                images.append(to_rgb(im))
        except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
            raise GanError(f"cannot read frame {path}: {e}") from None
        names.append(path.name)
    sizes: dict[tuple[int, int], list[str]] = {}
    for im, name in zip(images, names):
        sizes.setdefault(im.size, []).append(name)
    if len(sizes) > 1:
        listed = "; ".join(f"{w}x{h}: {', '.join(n[:3])}{' ...' if len(n) > 3 else ''}"
                           for (w, h), n in sizes.items())
        raise GanError(f"frames in {folder} differ in size ({listed}); all frames of a clip "
                       "must have one size")
    return images, names


def _decode_file(path: Path) -> tuple[list[Image.Image], list[str]]:
    images = []
    try:
        with Image.open(path) as im:
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                images.append(to_rgb(im))  # explicit RGB: GIF frames are palette or RGBA
    except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
        raise GanError(f"cannot read clip {path}: {e} (expected an animated GIF/WebP, a "
                       "single image, or a folder of frames)") from None
    return images, [f"{i:05d}.png" for i in range(len(images))]


def read_clip(path: str | Path, size=None) -> tuple[torch.Tensor, list[str]]:
    """Read a clip: a folder of PNG/JPEG frames (natural sort by name) or an image file (animated
    GIF/WebP: all frames; a still image: T = 1). size: None keeps the frames as they are, an int
    centre-crops to a square and resizes, (H, W) resizes without cropping.
    Returns (frames uint8 (T, 3, H, W), frame names); a file's frames are named 00000.png, ..."""
    _check_size(size, f"read_clip {path}")
    path = Path(path)
    if not path.exists():
        raise GanError(f"clip not found: {path} (expected a folder of PNG/JPEG frames or an "
                       "animated GIF/WebP file)")
    images, names = _decode_folder(path) if path.is_dir() else _decode_file(path)
    arr = np.stack([np.asarray(_fit(im, size, Image.Resampling.BICUBIC)) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), names  # (T, 3, H, W)


def _check_clip(frames: torch.Tensor, where: str) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4 \
            or frames.shape[1] != 3 or frames.shape[0] == 0:
        got = (f"{tuple(frames.shape)} {frames.dtype}" if isinstance(frames, torch.Tensor)
               else type(frames).__name__)
        raise GanError(f"{where}: expected uint8 frames (T, 3, H, W) with T >= 1, got {got}")


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames in [-1, 1] as uint8 0..255 (clamped, rounded); uint8 passes through."""
    if frames.dtype == torch.uint8:
        return frames
    return ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def write_frames(frames: torch.Tensor, folder: str | Path, names: list[str]) -> None:
    """Write uint8 frames (T, 3, H, W) into `folder` under `names` (.png, or .jpg at quality 95).
    All frames go to hidden temporary files first and are renamed at the end, so a crash never
    leaves half a clip that looks complete."""
    _check_clip(frames, f"write_frames {folder}")
    names = list(names)
    if len(names) != frames.shape[0] or len(set(names)) != len(names):
        raise GanError(f"write_frames {folder}: need {frames.shape[0]} distinct names, got "
                       f"{len(names)} ({len(set(names))} distinct)")
    for name in names:
        if Path(name).name != name or name.startswith(".") \
                or Path(name).suffix.lower() not in FRAME_SUFFIXES:
            raise GanError(f"write_frames {folder}: frame name {name!r} must be a plain file "
                           f"name ending in one of {FRAME_SUFFIXES}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = frames.permute(0, 2, 3, 1).cpu().numpy()  # (T, H, W, 3)
    temps = [folder / f".{name}.tmp-{os.getpid()}" for name in names]
    try:
        for arr, name, tmp in zip(pixels, names, temps):
            fmt = "PNG" if name.lower().endswith(".png") else "JPEG"
            Image.fromarray(arr, "RGB").save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG"
                                                                 else {}))
        for name, tmp in zip(names, temps):
            os.replace(tmp, folder / name)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def write_gif(frames: torch.Tensor, path: str | Path, fps: float = 8) -> None:
    """An animated preview at `fps`, looping: .gif (256-colour palette per frame, so colours shift
    slightly) or .webp (lossless). Both formats merge identical consecutive frames into one longer
    frame, so reading back can give fewer frames than were written; timing stays right."""
    _check_clip(frames, f"write_gif {path}")
    path = Path(path)
    if path.suffix.lower() not in ANIMATED_SUFFIXES:
        raise GanError(f"write_gif: {path} must end in .gif or .webp")
    if not isinstance(fps, (int, float)) or not 0 < fps <= 100:
        raise GanError(f"write_gif {path}: fps must be a number in (0, 100], got {fps!r}")
    images = [Image.fromarray(a, "RGB") for a in frames.permute(0, 2, 3, 1).cpu().numpy()]
    extra = {"lossless": True} if path.suffix.lower() == ".webp" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(round(1000 / fps)), **extra)


def side_by_side(*clips: torch.Tensor) -> torch.Tensor:
    """Clips (T, 3, H, W) placed left to right with a 2-px white gap, e.g. damaged | repaired |
    original. uint8 or float in [-1, 1] (white = 255 or 1). (T, 3, H, k*W + 2*(k-1))"""
    if not clips:
        raise GanError("side_by_side: give at least one clip")
    first = clips[0]
    for c in clips:
        if c.dim() != 4 or c.shape[1] != 3 or c.shape != first.shape or c.dtype != first.dtype:
            raise GanError(f"side_by_side: every clip must be (T, 3, H, W) with one shape and "
                           f"dtype; got {[(tuple(x.shape), str(x.dtype)) for x in clips]}")
    gap = torch.full((*first.shape[:3], GAP), 255 if first.dtype == torch.uint8 else 1.0,
                     dtype=first.dtype, device=first.device)  # (T, 3, H, GAP)
    parts = [p for c in clips for p in (gap, c)][1:]
    return torch.cat(parts, dim=3)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of a split folder (metadata.jsonl rows with "clip" = frame folder and "frames" =
    count, as written by gan.data.moving_shapes); item i is {"frames": (T, 3, H, W) float in
    [-1, 1], "index": i}. All clips must share T and size (they are batched together).

    preload=None decodes every clip up front into one uint8 tensor when that takes under 1 GiB.
    bad_samples (gan.data.bad_samples) decides what a bad row does (a bad metadata line, no usable
    "clip"/"frames", a missing or unreadable frame, a frame count or size unlike the metadata or
    the first good clip, a bad sound when the policy checks audio): "error" (default) lists the
    problems and raises; "skip" drops those rows here, before the caption cache or audio bank index
    them, and `skipped` lists what was dropped. Every clip is decoded up front when preloading or
    skipping; a lazy "error" dataset decodes the first clip, checks that the others exist with
    the right number of frames, and decodes them when they are used."""

    def __init__(self, split_dir: str | Path, size=None, preload: bool | None = None,
                 bad_samples: BadSamplePolicy | None = None):
        _check_size(size, "ClipDataset")
        self.split_dir, self.size = Path(split_dir), size
        policy = bad_samples or BadSamplePolicy()
        screen = Screening(self.split_dir, policy)
        for number, row in screen.good_rows():
            clip, frames = row.get("clip"), row.get("frames")
            if not isinstance(clip, str) or not clip.strip() \
                    or not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
                screen.flag(number, "expected \"clip\" (frame folder name) and \"frames\" (positive "
                            f"integer), got clip={clip!r} frames={frames!r}")
        if policy.audio:
            screen.check_audio(progress=policy.announce)
        self._index(screen.good_rows())
        decoded = self._screen_clips(screen, preload, decode_all=policy.mode == "skip")
        kept = screen.settle()
        self.skipped = screen.skipped
        self._index(kept)
        self.clips = None
        if self.preloaded:
            self.clips = torch.stack([decoded[n] for n in self.lines])  # (N, T, 3, H, W) uint8

    def _index(self, numbered: list[tuple[int, dict]]) -> None:
        self.lines = [n for n, _ in numbered]
        self.rows = [row for _, row in numbered]
        self.texts = [row["text"] for row in self.rows]

    def _screen_clips(self, screen: Screening, preload: bool | None, decode_all: bool) -> dict:
        """Decode the clips (all of them when preloading or skipping, else only the first good
        one), flagging bad rows in `screen`; sets `shape` and `preloaded`. Returns {line: frames}
        of the decoded clips when preloading, else {}."""
        decoded, self.shape, first = {}, None, len(self.rows)
        for i in range(len(self.rows)):
            try:
                decoded[self.lines[i]] = self._read(i)
            except GanError as e:
                screen.flag(self.lines[i], str(e).removeprefix(self._where(i)))
                continue
            self.shape, first = tuple(decoded[self.lines[i]].shape), i  # (T, 3, H, W)
            break
        if self.shape is None:  # no row decoded: settle() lists why (error mode or none left)
            screen.settle()
            raise GanError(f"no readable clip in {self.split_dir / METADATA}")
        nbytes = len(self.rows) * math.prod(self.shape)
        self.preloaded = nbytes < PRELOAD_LIMIT_BYTES if preload is None else bool(preload)
        if not (self.preloaded or decode_all):
            for i in range(first + 1, len(self.rows)):  # cheap checks now, decoding when read
                problem = self._listing_problem(i)
                if problem:
                    screen.flag(self.lines[i], problem)
            return {}
        for i in tqdm(range(first + 1, len(self.rows)), desc=f"loading {self.split_dir.name}",
                      unit="clip", disable=None if screen.policy.announce else True):
            try:
                frames = self._read(i)
            except GanError as e:
                screen.flag(self.lines[i], str(e).removeprefix(self._where(i)))
                continue
            if self.preloaded:
                decoded[self.lines[i]] = frames
        return decoded if self.preloaded else {}

    def _listing_problem(self, i: int) -> str | None:
        """What a directory listing shows wrong with row i's clip (missing, frame count)."""
        row = self.rows[i]
        path = self.split_dir / row["clip"]
        if not path.exists():
            return f"clip not found: {path}"
        if path.is_dir():
            try:
                count = len(_frame_files(path))
            except GanError as e:  # no frames at all
                return str(e)
            if count != row["frames"]:
                return f"clip {row['clip']} has {count} frames, metadata says {row['frames']}"
        return None

    def _where(self, i: int) -> str:
        return f"{self.split_dir / METADATA}:{self.lines[i]}: "

    def _read(self, i: int) -> torch.Tensor:
        row = self.rows[i]
        try:
            frames, _ = read_clip(self.split_dir / row["clip"], self.size)
        except GanError as e:
            raise GanError(self._where(i) + str(e)) from None
        if frames.shape[0] != row["frames"]:
            raise GanError(self._where(i) + f"clip {row['clip']} has {frames.shape[0]} frames, "
                           f"metadata says {row['frames']}")
        if self.shape is not None and tuple(frames.shape) != self.shape:
            raise GanError(self._where(i) + f"clip {row['clip']} is {tuple(frames.shape)}, the "
                           f"first good clip is {self.shape}; give a size to resize all clips alike")
        return frames

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        i %= len(self)
        pixels = self.clips[i] if self.clips is not None else self._read(i)  # (T, 3, H, W) uint8
        return {"frames": pixels.float() / 127.5 - 1.0, "index": i}


class DavisVideo(NamedTuple):
    frames: torch.Tensor  # (T, 3, H, W) uint8
    names: list[str]  # frame file names, e.g. 00000.jpg
    masks: torch.Tensor | None  # (T, H, W) bool, nonzero annotation = object; None if absent


def _davis_dir(root: Path, kind: str, video: str) -> Path | None:
    for candidate in (root / kind / "480p" / video, root / kind / video):
        if candidate.is_dir():
            return candidate
    return None


def read_davis(root: str | Path, video: str, size=None) -> DavisVideo:
    """One DAVIS video from `root` (the folder holding JPEGImages/ and Annotations/, each with or
    without a 480p/ level): its frames and, when Annotations/<video>/ exists, its object masks
    (one PNG per frame; resized with nearest neighbour, like the frames are resized)."""
    root = Path(root)
    frames_dir = _davis_dir(root, "JPEGImages", video)
    if frames_dir is None:
        raise GanError(f"DAVIS video {video!r} not found: expected {root}/JPEGImages/480p/{video}/ "
                       f"(or {root}/JPEGImages/{video}/) holding 00000.jpg, 00001.jpg, ...")
    frames, names = read_clip(frames_dir, size)
    ann_dir = _davis_dir(root, "Annotations", video)
    if ann_dir is None:
        return DavisVideo(frames, names, None)
    with Image.open(frames_dir / names[0]) as im:
        w, h = im.size
    native = load_masks(ann_dir, names, (h, w))  # (T, h, w)
    masks = [np.asarray(_fit(Image.fromarray(m), size, Image.Resampling.NEAREST))
             for m in native.numpy()]
    return DavisVideo(frames, names, torch.from_numpy(np.stack(masks)))


def davis_videos(root: str | Path) -> list[str]:
    """Names of the videos under root/JPEGImages[/480p], sorted."""
    root = Path(root)
    base = root / "JPEGImages" / "480p"
    base = base if base.is_dir() else root / "JPEGImages"
    if not base.is_dir():
        raise GanError(f"no JPEGImages/ folder in {root} (expected the unpacked DAVIS archive, "
                       "e.g. DAVIS/JPEGImages/480p/<video>/00000.jpg)")
    return sorted(p.name for p in base.iterdir() if p.is_dir())
