"""Video repair metrics: PSNR and SSIM (whole frame and inside the holes) and temporal error.

Clips are uint8 (0..255) or float in [-1, 1], shaped (T, 3, H, W) or batched (B, T, 3, H, W);
everything is scored in [0, 1] units (data range 1) and in float64, so numbers from uint8 files
and from model outputs are comparable. Masks are (T, H, W) or (B, T, H, W), optionally with a
channel dim of 1 before H, W; nonzero / True = hole.

Aggregation (each metric returns one float):
- psnr / ssim on whole frames: per frame, then the mean over frames and clips - the
  E2FGVI/ProPainter convention.
- hole_psnr / hole_ssim: per clip over all its hole pixels pooled across frames (per-frame hole
  scores would be dominated by frames with a handful of hole pixels), then the mean over clips
  that have holes; NaN when no clip has any hole.
- PSNR is capped at PSNR_CAP = 100 dB: identical frames (MSE 0, PSNR +inf) score 100, so one
  perfect frame cannot make a clip average infinite. 100 dB is an MSE of 1e-10, far below
  uint8 quantisation (~48 dB for one level of error everywhere), so the cap never bites otherwise.
- hole SSIM is the SSIM map (torchmetrics, return_full_image=True: one value per pixel, from an
  11x11 Gaussian window centred there) averaged over hole pixels. Windows at the edge of a hole
  also cover known pixels, so it scores the fill together with how it meets its surroundings;
  a fill that is right inside but seams badly at the border still loses.
- temporal error: mean over t of |(pred[t+1] - pred[t]) - (target[t+1] - target[t])|, i.e. how
  far the clip's frame-to-frame change departs from the ground truth's. Flicker and jitter
  raise it; a constant offset does not (it is 0 for pred = target + c). NaN for T = 1.
"""

import math

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from gan.errors import GanError

PSNR_CAP = 100.0
SSIM_WINDOW = 11  # torchmetrics' default Gaussian window (sigma 1.5)


def _to01(x, where: str) -> torch.Tensor:
    """A clip or batch of clips as float64 in [0, 1], (B, T, 3, H, W)."""
    if not torch.is_tensor(x) or x.dim() not in (4, 5) or x.shape[-3] != 3 or x.shape[-4] == 0 \
            or not (x.dtype == torch.uint8 or x.is_floating_point()):
        got = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise GanError(f"{where}: expected uint8 or [-1, 1] float clips (T, 3, H, W) or "
                       f"(B, T, 3, H, W), got {got}")
    u = x.detach().to("cpu", torch.float64)
    u = u / 255.0 if x.dtype == torch.uint8 else ((u + 1.0) / 2.0).clamp(0.0, 1.0)
    return u if u.dim() == 5 else u.unsqueeze(0)


def _pair(pred, target, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _to01(pred, f"{where} pred"), _to01(target, f"{where} target")
    if p.shape != t.shape:
        raise GanError(f"{where}: pred and target must have one shape, got {tuple(pred.shape)} and "
                       f"{tuple(target.shape)}")
    return p, t


def _mask(mask, shape: torch.Size, where: str) -> torch.Tensor:
    """The mask as bool (B, T, 1, H, W), checked against clips of `shape` (B, T, 3, H, W)."""
    B, T, _, H, W = shape
    if torch.is_tensor(mask):
        m = mask.detach().cpu()
        for want in ((B, T, H, W), (B, T, 1, H, W)) + (((T, H, W), (T, 1, H, W)) if B == 1 else ()):
            if tuple(m.shape) == want:
                return (m != 0).reshape(B, T, 1, H, W)
    got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
    raise GanError(f"{where}: expected a mask of shape {(T, H, W) if B == 1 else (B, T, H, W)} "
                   f"(True = hole) for clips {tuple(shape)}, got {got}")


def _db(mse: torch.Tensor) -> torch.Tensor:
    """PSNR for data range 1, capped at PSNR_CAP (mse 0 -> the cap)."""
    return (-10.0 * torch.log10(mse.clamp_min(1e-300))).clamp(max=PSNR_CAP)


def _hole_means(values: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """values (B, T, 3, H, W), hole (B, T, 1, H, W) -> each clip's mean over its hole pixels
    (pooled across frames), for the clips that have any hole. (B',)"""
    w = hole.expand_as(values).to(values.dtype)
    area = w.sum(dim=(1, 2, 3, 4))  # (B,)
    has = area > 0
    return (values * w).sum(dim=(1, 2, 3, 4))[has] / area[has]


def _mean_or_nan(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else math.nan


def _psnr01(p: torch.Tensor, t: torch.Tensor, hole: torch.Tensor | None) -> float:
    err = (p - t).pow(2)  # (B, T, 3, H, W)
    if hole is None:
        return float(_db(err.mean(dim=(2, 3, 4))).mean())  # per frame, then the mean
    return _mean_or_nan(_db(_hole_means(err, hole)))


def psnr(pred, target, mask=None) -> float:
    """PSNR in dB (data range 1, capped at 100): mean of per-frame PSNR; with `mask`, from the
    MSE over each clip's hole pixels only (valid pixels ignored), averaged over clips; NaN when
    the mask has no hole."""
    p, t = _pair(pred, target, "psnr")
    return _psnr01(p, t, None if mask is None else _mask(mask, p.shape, "psnr"))


def _ssim_map(p: torch.Tensor, t: torch.Tensor, where: str) -> torch.Tensor:
    """SSIM per pixel and channel, (B, T, 3, H, W)."""
    B, T, C, H, W = p.shape
    if min(H, W) < SSIM_WINDOW:
        raise GanError(f"{where}: frames must be at least {SSIM_WINDOW} px on each side (the SSIM "
                       f"window), got {H}x{W} (HxW)")
    _, full = structural_similarity_index_measure(p.reshape(B * T, C, H, W), t.reshape(B * T, C, H, W),
                                                  data_range=1.0, return_full_image=True)
    return full.reshape(B, T, C, H, W)


def ssim(pred, target, mask=None) -> float:
    """SSIM (torchmetrics, Gaussian 11x11, data range 1): mean of per-frame SSIM; with `mask`,
    the SSIM map averaged over each clip's hole pixels, averaged over clips."""
    p, t = _pair(pred, target, "ssim")
    full = _ssim_map(p, t, "ssim")
    if mask is None:
        return float(full.mean())  # = mean over frames of torchmetrics' per-frame value
    return _mean_or_nan(_hole_means(full, _mask(mask, p.shape, "ssim")))


def _temporal01(p: torch.Tensor, t: torch.Tensor) -> float:
    if p.shape[1] < 2:
        return math.nan
    dp = p[:, 1:] - p[:, :-1]  # (B, T-1, 3, H, W)
    dt = t[:, 1:] - t[:, :-1]
    return float((dp - dt).abs().mean())


def temporal_error(pred, target) -> float:
    """Mean over t (and pixels, clips) of |(pred[t+1] - pred[t]) - (target[t+1] - target[t])|,
    in [0, 1] units. 0 when pred equals target up to a constant; NaN for single frames."""
    return _temporal01(*_pair(pred, target, "temporal_error"))


def repair_metrics(pred, target, mask) -> dict[str, float]:
    """All of the above for a repaired clip (or batch) against the original:
    {"psnr", "ssim", "hole_psnr", "hole_ssim", "temporal"}."""
    p, t = _pair(pred, target, "repair_metrics")
    hole = _mask(mask, p.shape, "repair_metrics")
    full = _ssim_map(p, t, "repair_metrics")  # shared by both SSIM numbers
    return {
        "psnr": _psnr01(p, t, None),
        "ssim": float(full.mean()),
        "hole_psnr": _psnr01(p, t, hole),
        "hole_ssim": _mean_or_nan(_hole_means(full, hole)),
        "temporal": _temporal01(p, t),
    }
