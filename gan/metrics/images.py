"""Folders of images for `gan eval --fake DIR --real DIR`.

Metrics take uint8 RGB; anything else (grayscale, RGBA, palette, CMYK, ...) is converted
explicitly and counted, so a result can say that e.g. 300 reference images were grayscale. Alpha
is dropped, not composited, as the reference FID tools do. Files are fully decoded
(`Image.load()`), so truncated files are caught rather than silently padded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from gan.errors import GanError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted by relative path; hidden files and folders
    (names starting with ".", e.g. a .cache next to the data) are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanError(f"image folder {folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    files = sorted(
        (p for p in folder.rglob("*")
         if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise GanError(f"image folder {folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return files


def read_image(path: Path, converted: dict[str, int] | None = None) -> torch.Tensor:
    """One file as uint8 (3, H, W); GanError names the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            img.load()  # decode everything now: a truncated file fails here, not later
            mode = img.mode
            if mode != "RGB":
                if mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")  # what Pillow asks for palette transparency
                img = img.convert("RGB")
            array = np.array(img, dtype=np.uint8)  # (H, W, 3), a writable copy
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise GanError(f"{path}: not a readable image ({e})") from None
    if converted is not None and mode != "RGB":
        converted[mode] = converted.get(mode, 0) + 1
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


class ImageFolder(torch.utils.data.Dataset):
    """uint8 (3, H, W) RGB images of a folder (or of a given file list).

    `converted` counts non-RGB files by original mode as they are read (in this process: with
    DataLoader workers the counts stay in the workers).
    """

    def __init__(self, source: str | Path | list[Path]):
        self.files = list_images(source) if isinstance(source, (str, Path)) else [Path(f) for f in source]
        self.converted: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return read_image(self.files[i], self.converted)  # (3, H, W) uint8


def load_images(folder: str | Path, *, limit: int | None = None, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """All images of `folder` as (N, 3, H, W) uint8, plus {"folder", "count", "converted", "size"}.

    Every file is read before anything is reported, so one error lists all the problems: up to
    10 unreadable files, or every image size found with an example file.
    """
    folder = Path(folder)
    if limit is not None and limit < 1:
        raise GanError(f"load_images {folder}: limit must be a positive number of images, got {limit}")
    files = list_images(folder)[:limit]
    dataset = ImageFolder(files)
    bad: list[str] = []
    sizes: dict[tuple[int, int], list] = {}  # (H, W) -> [count, example file]
    out: torch.Tensor | None = None
    for i in tqdm(range(len(files)), desc=f"images {folder.name}", disable=not progress, leave=False):
        try:
            image = dataset[i]  # (3, H, W)
        except GanError as e:
            bad.append(str(e))
            continue
        size = tuple(image.shape[1:])
        sizes.setdefault(size, [0, files[i]])[0] += 1
        if out is None:
            out = torch.empty(len(files), 3, *size, dtype=torch.uint8)  # filled in place: no second copy
        if len(sizes) == 1:
            out[i] = image
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise GanError(f"image folder {folder}: {len(bad)} unreadable file(s){more}:\n  " + "\n  ".join(bad[:10]))
    if len(sizes) > 1:
        found = "; ".join(f"{h}x{w} ({n} images, e.g. {example})" for (h, w), (n, example) in sizes.items())
        raise GanError(f"image folder {folder}: images must all have one size, found {found}. "
                       f"Resize them to one size first")
    (h, w), = sizes
    report = {"folder": str(folder), "count": len(files), "converted": dict(dataset.converted), "size": [h, w]}
    return out, report
