"""A torch Dataset over one split folder (metadata.jsonl + images), images scaled to [-1, 1]."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gan.data.metadata import METADATA, read_metadata_numbered
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
    """

    def __init__(self, split_dir: str | Path, resolution: int, preload: bool | None = None):
        if not isinstance(resolution, int) or resolution < 1:
            raise GanError(f"resolution must be a positive integer, got {resolution!r}")
        self.split_dir = Path(split_dir)
        self.resolution = resolution
        numbered = read_metadata_numbered(self.split_dir)
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

        nbytes = len(self.files) * 3 * resolution * resolution
        self.preloaded = nbytes < PRELOAD_LIMIT_BYTES if preload is None else bool(preload)
        self.images = None
        if self.preloaded:
            shape = (len(self.files), 3, resolution, resolution)  # (N, 3, R, R)
            self.images = torch.empty(shape, dtype=torch.uint8)
            for k in tqdm(range(len(self.files)), desc=f"loading {self.split_dir.name}",
                          unit="img", disable=None):
                self.images[k] = self._decode(k)

    def _decode(self, k: int) -> torch.Tensor:
        """Unique image k as a (3, R, R) uint8 tensor; GanError names the file and metadata line."""
        path = self.split_dir / self.files[k]
        try:
            arr = load_image(path, self.resolution)  # (R, R, 3)
        except FileNotFoundError:
            raise GanError(self._where(k) + f"image file not found: {path}") from None
        except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
            raise GanError(self._where(k) + f"cannot read image {path}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, R, R)

    def _where(self, k: int) -> str:
        return f"{self.split_dir / METADATA}:{self.lines[self._first_row[k]]}: "

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
