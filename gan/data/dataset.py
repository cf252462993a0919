"""A torch Dataset over one split folder (metadata.jsonl + images), images scaled to [-1, 1]."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gan.data.bad_samples import BadSamplePolicy, Screening
from gan.data.metadata import METADATA
from gan.errors import GanError

PRELOAD_LIMIT_BYTES = 1 << 30  # preload decoded images when they fit in 1 GiB of uint8


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB. Transparent pixels are composited on white, since their
    stored colour is arbitrary (often black) and would otherwise leak into the training set."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale, don't clip at 255
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / 257.0, 0, 255).round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, resolution: int) -> np.ndarray:
    """Decode an image to RGB, centre-crop it to a square, resize to `resolution`. (R, R, 3) uint8

    Raises whatever PIL raises for a missing or bad file; callers add the context.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)  # camera photos store rotation in EXIF, not in pixels
        im = to_rgb(im)
    return square_resize(im, resolution)


def square_resize(im: Image.Image, resolution: int) -> np.ndarray:
    """Centre-crop an RGB image to a square and resize it to `resolution`. (R, R, 3) uint8"""
    w, h = im.size
    side = min(w, h)
    if w != h:
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        # PIL's resize widens the filter when shrinking, i.e. bicubic with antialiasing.
        im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


class ImageTextDataset(torch.utils.data.Dataset):
    """Rows of split_dir/metadata.jsonl; item i is {"image": (3, R, R) float in [-1, 1],
    "index": i}.

    preload=None decodes every image up front into one uint8 tensor when that takes under
    1 GiB (fast epochs, no decoding in workers), otherwise decodes lazily per item.
    Rows that share a file_name (e.g. one row per caption) share one decoded image.

    bad_samples (gan.data.bad_samples) decides what a bad row does: "error" (default) lists the
    problems and raises, "skip" drops those rows here, so every index into this dataset (text
    cache, audio bank, condition inputs) refers to the kept rows; `skipped` lists what was dropped.
    Images are decoded up front when preloading or skipping; a lazy "error" dataset checks only
    that each file exists and is not empty, and reports an undecodable one when it is read.
    """

    def __init__(self, split_dir: str | Path, resolution: int, preload: bool | None = None,
                 bad_samples: BadSamplePolicy | None = None):
        if not isinstance(resolution, int) or resolution < 1:
            raise GanError(f"resolution must be a positive integer, got {resolution!r}")
        self.split_dir = Path(split_dir)
        self.resolution = resolution
        policy = bad_samples or BadSamplePolicy()
        screen = Screening(self.split_dir, policy)
        if policy.audio:
            screen.check_audio(progress=policy.announce)
        self._index(screen.good_rows())
        nbytes = len(self.files) * 3 * resolution * resolution
        self.preloaded = nbytes < PRELOAD_LIMIT_BYTES if preload is None else bool(preload)
        images = self._screen_images(screen, decode=self.preloaded or policy.mode == "skip")
        kept = screen.settle()
        self.skipped = screen.skipped
        if len(kept) != len(self.rows):
            position = {name: k for k, name in enumerate(self.files)}
            self._index(kept)
            if images is not None:  # keep only the decoded images that kept rows use
                images = images[[position[name] for name in self.files]]
        self.images = images

    def _index(self, numbered: list[tuple[int, dict]]) -> None:
        """Set the rows (and their metadata line numbers, captions, unique images) to `numbered`."""
        self.lines = [number for number, _ in numbered]
        self.rows = [row for _, row in numbered]
        self.texts: list[str] = [row["text"] for row in self.rows]
        # Map each row to a unique image so captions of the same picture decode it once.
        files: dict[str, int] = {}
        self.image_of_row = [files.setdefault(row["file_name"], len(files)) for row in self.rows]
        self.files = list(files)
        first_row = {}
        for r, k in enumerate(self.image_of_row):
            first_row.setdefault(k, r)
        self._first_row = [first_row[k] for k in range(len(self.files))]

    def _screen_images(self, screen: Screening, decode: bool) -> torch.Tensor | None:
        """Check every unique image, flagging the rows of bad ones in `screen`; with decode, also
        decode each (skip mode must find undecodable files before training) and, when preloading,
        return them as one (N, 3, R, R) uint8 tensor."""
        keep = self.preloaded
        images = torch.empty((len(self.files), 3, self.resolution, self.resolution), dtype=torch.uint8) \
            if keep else None
        rows_of: dict[int, list[int]] = {}
        for r, k in enumerate(self.image_of_row):
            rows_of.setdefault(k, []).append(r)
        for k in tqdm(range(len(self.files)), desc=f"loading {self.split_dir.name}", unit="img",
                      disable=None if decode else True):
            path = self.split_dir / self.files[k]
            try:
                pixels = self._pixels(path) if decode else _check_file(path)
            except GanError as e:
                for r in rows_of[k]:
                    screen.flag(self.lines[r], str(e))
                continue
            if keep:
                images[k] = pixels
        return images

    def _pixels(self, path: Path) -> torch.Tensor:
        """The image at `path` as a (3, R, R) uint8 tensor; GanError names the file."""
        _check_file(path)
        try:
            arr = load_image(path, self.resolution)  # (R, R, 3)
        except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
            raise GanError(f"cannot read image {path}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, R, R)

    def _decode(self, k: int) -> torch.Tensor:
        """Unique image k as a (3, R, R) uint8 tensor; GanError names the file and metadata line."""
        try:
            return self._pixels(self.split_dir / self.files[k])
        except GanError as e:
            raise GanError(f"{self.split_dir / METADATA}:{self.lines[self._first_row[k]]}: {e}") from None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} rows")
        i %= len(self)
        k = self.image_of_row[i]
        pixels = self.images[k] if self.images is not None else self._decode(k)  # (3, R, R) uint8
        return {"image": pixels.float() / 127.5 - 1.0, "index": i}


def _check_file(path: Path) -> None:
    """Cheap checks every image gets, even when decoding waits until the item is read."""
    try:
        size = path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):  # ValueError: a NUL in the name
        size = None
    if size is None:
        raise GanError(f"image file not found: {path}")
    if size == 0:
        raise GanError(f"image file {path} is empty (0 bytes)")
