"""The two non-learned baselines a video repair model has to beat.

- `telea`: every frame on its own, OpenCV's Telea inpainting (fast marching: each hole pixel
  is a weighted average of known pixels around it, marching inward from the border). Smooth,
  blurry fills with no notion of time: the floor for a per-image method.
- `nearest_visible`: for each hole pixel, the same pixel of the nearest frame in time where it
  is visible (ties go to the earlier frame); Telea only where the pixel is never visible. Exact
  for a static scene under a moving hole, ghosting for moving content: the floor for "use the
  other frames".

Both zero the hole pixels before anything else, so the damaged content is never read, and both
leave every valid pixel exactly as it was.
"""

import cv2
import numpy as np
import torch

from gan.errors import GanError

GRAY = 128  # fill of a frame with no visible pixel at all: nothing in it to propagate


def _check(frames, mask, radius, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8 with holes zeroed, hole (T, H, W) bool) as numpy arrays."""
    if not torch.is_tensor(frames) or frames.dtype != torch.uint8 or frames.dim() != 4 \
            or frames.shape[1] != 3 or frames.shape[0] == 0:
        got = f"{tuple(frames.shape)} {frames.dtype}" if torch.is_tensor(frames) else type(frames).__name__
        raise GanError(f"{where}: expected uint8 frames (T, 3, H, W) with T >= 1, got {got}")
    T, _, H, W = frames.shape
    if not torch.is_tensor(mask) or mask.dtype != torch.bool or tuple(mask.shape) != (T, H, W):
        got = f"{tuple(mask.shape)} {mask.dtype}" if torch.is_tensor(mask) else type(mask).__name__
        raise GanError(f"{where}: expected a bool mask (T, H, W) = {(T, H, W)} (True = hole), got {got}")
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
        raise GanError(f"{where}: radius must be a positive integer (pixels), got {radius!r}")
    hole = mask.cpu().numpy()
    x = frames.cpu().permute(0, 2, 3, 1).numpy().copy()  # (T, H, W, 3)
    x[hole] = 0  # the damaged content is a placeholder, never evidence
    return x, hole


def _telea_frame(img: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    """img (H, W, 3) uint8, hole (H, W) bool -> img with its holes filled by Telea."""
    if not hole.any():
        return img
    if hole.all():
        return np.full_like(img, GRAY)
    filled = cv2.inpaint(np.ascontiguousarray(img), hole.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return np.where(hole[..., None], filled, img)  # valid pixels stay bit-exact


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


def telea(frames: torch.Tensor, mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Per-frame OpenCV Telea inpainting. frames uint8 (T, 3, H, W), mask bool (T, H, W)
    (True = hole), radius: neighbourhood in pixels. Returns uint8 (T, 3, H, W). A frame that is
    wholly a hole becomes mid-gray (128)."""
    x, hole = _check(frames, mask, radius, "telea")
    return _to_tensor(np.stack([_telea_frame(img, h, radius) for img, h in zip(x, hole)]))


def nearest_visible(frames: torch.Tensor, mask: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Each hole pixel copied from the nearest frame where that pixel is visible (ties: the
    earlier frame); pixels never visible in the clip are filled per frame by Telea (radius as in
    `telea`), which then sees the copied pixels as known. frames uint8 (T, 3, H, W), mask bool
    (T, H, W). Returns uint8 (T, 3, H, W)."""
    x, hole = _check(frames, mask, radius, "nearest_visible")
    T, H, W = hole.shape
    # For every (t, pixel): the last frame <= t where it is visible (-1: none) and the first
    # frame >= t (T: none). Two scans over time; T is small, H x W is vectorised.
    before = np.empty((T, H, W), np.int64)
    after = np.empty((T, H, W), np.int64)
    last, nxt = np.full((H, W), -1), np.full((H, W), T)
    for t in range(T):
        last = np.where(hole[t], last, t)
        before[t] = last
    for t in reversed(range(T)):
        nxt = np.where(hole[t], nxt, t)
        after[t] = nxt
    now = np.arange(T)[:, None, None]  # (T, 1, 1)
    gap_before = np.where(before >= 0, now - before, T + 1)  # (T, H, W); T + 1 = never
    gap_after = np.where(after < T, after - now, T + 1)
    source = np.where(gap_before <= gap_after, before, after)
    never = (before < 0) & (after >= T)
    source = np.where(never, now, source)  # any in-range index; those pixels are refilled below
    out = np.take_along_axis(x, np.broadcast_to(source[..., None], x.shape), axis=0)  # (T, H, W, 3)
    return _to_tensor(np.stack([_telea_frame(img, n, radius) for img, n in zip(out, never)]))
