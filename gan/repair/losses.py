"""Video repair losses, as pure functions (plus an optional VGG perceptual module).

Weighting used by the published video inpainting models this task is compared with:

- E2FGVI (Li et al., CVPR 2022) and ProPainter (Zhou et al., ICCV 2023) train the generator on
      L = 1 * hole_L1 + 1 * valid_L1 + 0.01 * adversarial
  (plus flow terms for their flow modules), with a T-PatchGAN discriminator (Chang et al.)
  under the hinge loss; both use Adam(lr 1e-4, betas (0, 0.99)) (their released
  configs/train_e2fgvi.json and configs/train_propainter.json; ProPainter's lists
  perceptual_weight 0). The L1 terms use E2FGVI's normalisation,
  mean(|pred - gt| * mask) / mean(mask), i.e. the mean over hole pixels and channels.
- The adversarial weight is small so that the L1 terms carry the content and the
  discriminator only sharpens texture on top of it.
- Chang et al. also use perceptual and style losses; E2FGVI/ProPainter do not. `VGGPerceptual`
  is here as an option, off unless a training config turns it on.

valid_L1 is computed on the RAW prediction (the composite equals the input there and would give
no gradient): it keeps the generator's output near the input outside the holes, so the seam
between generated and known pixels is smooth.

Masks: (..., 1, H, W) or the shape of the images, bool or float, 1 = hole; broadcast over channels.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import GanError
from gan.losses import d_hinge, g_hinge
from gan.weights import check_state_dict, load_weights_file

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# torchvision's VGG16 "features": channel counts, "M" = 2x2 max-pool; each conv is followed by a ReLU.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, where: str) -> torch.Tensor:
    """The mask as float, expanded to pred's shape (1 = hole)."""
    if pred.shape != target.shape:
        raise GanError(f"{where}: pred and target must have one shape, got {tuple(pred.shape)} "
                       f"and {tuple(target.shape)}")
    ok = mask.dim() == pred.dim() and mask.shape[:-3] == pred.shape[:-3] \
        and mask.shape[-2:] == pred.shape[-2:] and mask.shape[-3] in (1, pred.shape[-3])
    if not ok:
        want = tuple(pred.shape[:-3]) + (1,) + tuple(pred.shape[-2:])
        raise GanError(f"{where}: expected a mask of shape {want} (1 = hole) for images "
                       f"{tuple(pred.shape)}, got {tuple(mask.shape)}")
    return mask.float().expand(pred.shape)


def _masked_l1(pred, target, weight) -> torch.Tensor:
    den = weight.sum()
    num = ((pred.float() - target.float()).abs() * weight).sum()
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def hole_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over hole pixels and channels; 0 when there are no holes."""
    return _masked_l1(pred, target, _weights(pred, target, mask, "hole_l1"))


def valid_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid (non-hole) pixels and channels; 0 when all are holes."""
    return _masked_l1(pred, target, 1.0 - _weights(pred, target, mask, "valid_l1"))


def repair_reconstruction(pred_raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                          hole_weight: float = 1.0, valid_weight: float = 1.0) -> torch.Tensor:
    """hole_weight * hole_l1 + valid_weight * valid_l1, on the raw (uncomposited) prediction."""
    return hole_weight * hole_l1(pred_raw, target, mask) + valid_weight * valid_l1(pred_raw, target, mask)


def temporal_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |(pred[t+1] - pred[t]) - (target[t+1] - target[t])| over clips (B, T, C, H, W): the
    training form of gan.repair.metrics.temporal_error. On the composite, known pixels cancel, so
    it only moves the fill, towards the motion the clip really has (less flicker between frames
    that were filled independently); 0 for T = 1."""
    if pred.shape != target.shape or pred.dim() != 5:
        raise GanError(f"temporal_l1: expected two clips (B, T, C, H, W) of one shape, got "
                       f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[1] < 2:
        return pred.float().sum() * 0.0
    dp = pred.float()[:, 1:] - pred.float()[:, :-1]  # (B, T-1, C, H, W)
    dt = target.float()[:, 1:] - target.float()[:, :-1]
    return (dp - dt).abs().mean()


def patch_hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge D loss over patch maps: mean(relu(1 - real)) + mean(relu(1 + fake)), every patch
    weighted alike (d_hinge already averages over all elements)."""
    return d_hinge(real_logits, fake_logits)


def patch_hinge_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge G loss over patch maps: -mean(fake)."""
    return g_hinge(fake_logits)


def _vgg16_features(last: int) -> nn.Sequential:
    """torchvision's vgg16().features[: last + 1], built here so the 120M-parameter classifier
    is never allocated; layer indices (and so state-dict keys) match torchvision's."""
    layers, cin = [], 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers[: last + 1])


class VGGPerceptual(nn.Module):
    """Mean L1 between VGG16 features of pred and target at a few ReLU layers (Johnson et al.).

    The weights come only from a local file (torchvision's vgg16-397923af.pth, or any file with
    its `features.*` keys); nothing is downloaded. The network is frozen; gradients flow into
    pred only. Images are (..., 3, H, W) in [-1, 1]; leading dims are folded into the batch.
    """

    def __init__(self, weights: str | Path, layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3")):
        super().__init__()
        bad = [name for name in layers if name not in VGG_LAYERS]
        if not layers or bad:
            raise GanError(f"VGGPerceptual: layers must be a non-empty subset of {tuple(VGG_LAYERS)}, "
                           f"got {tuple(layers)!r}")
        path = Path(weights)
        if not path.is_file():
            raise GanError(f"VGGPerceptual: VGG16 weights not found at {path}. Download torchvision's "
                           f"{VGG16_FILE} from {VGG16_URL} and pass its path (nothing is downloaded here)")
        self.indices = sorted(VGG_LAYERS[name] for name in layers)
        self.features = _vgg16_features(self.indices[-1])
        expected = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        state = load_weights_file(path, "VGGPerceptual")
        # A full torchvision file also holds deeper layers and the classifier: keep what is used.
        state = {k: v for k, v in state.items() if k in expected}
        state = check_state_dict(state, expected, f"VGGPerceptual {path}")
        self.load_state_dict(state)
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x.reshape(-1, *x.shape[-3:]).float() + 1) / 2 - self.mean) / self.std  # (N, 3, H, W)
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.indices:
                out.append(h)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.dim() < 4 or pred.shape[-3] != 3:
            raise GanError(f"VGGPerceptual: expected pred and target of one shape (..., 3, H, W), got "
                           f"{tuple(pred.shape)} and {tuple(target.shape)}")
        with torch.no_grad():
            real = self._feats(target)
        fake = self._feats(pred)
        return sum(F.l1_loss(f, r) for f, r in zip(fake, real)) / len(fake)
