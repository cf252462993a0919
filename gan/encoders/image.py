"""Instance embeddings of an image: the condition of instance-conditioned GANs.

Generating from the embedding of one image gives new images that share its content (IC-GAN,
Casanova et al., 2021). The encoder is a ResNet-18 trunk built from torchvision's `BasicBlock`
with torchvision's parameter names, so an ImageNet checkpoint loads into it unchanged. Its final
feature map gives both outputs of the `Embeddings` interface: every position becomes a patch token
(so the generator's cross-attention can look at parts of the image), and the global average
becomes the pooled vector.

Small images (<= 64 px) get the CIFAR stem (3x3 stride-1 conv, no max-pool): the ImageNet stem
shrinks 32 px to 8 px before the first block and would leave a single 1x1 position at the end.
The ResNet keeps its BatchNorm (the pretrained weights need it); unlike in G and D that is
harmless here, since the encoder only ever sees real images.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image, ImageOps
from torchvision.models.resnet import BasicBlock

from gan.data.dataset import square_resize, to_rgb
from gan.encoders.base import Embeddings
from gan.errors import GanError
from gan.metrics.backbones import IMAGENET_MEAN, IMAGENET_STD
from gan.weights import check_state_dict, load_model_folder, load_weights_file

SUBFOLDER = "image_encoder"
RESNET18_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2  # ResNet-18
SMALL_STEM_MAX_RESOLUTION = 64
TORCHVISION_FILE = "resnet18-f37072fd.pth"
TORCHVISION_URL = f"https://download.pytorch.org/models/{TORCHVISION_FILE}"


class ResNetTrunk(nn.Module):
    """ResNet-18 without its classifier; attribute names follow torchvision's `ResNet`."""

    def __init__(self, channels: tuple[int, ...], small_stem: bool):
        super().__init__()
        c0 = channels[0]
        if small_stem:  # CIFAR stem: keeps full resolution into layer1
            self.conv1 = nn.Conv2d(3, c0, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:  # ImageNet stem: /4 before layer1
            self.conv1 = nn.Conv2d(3, c0, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        in_ch = c0
        for i, out_ch in enumerate(channels):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or in_ch != out_ch:
                down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
            blocks = [BasicBlock(in_ch, out_ch, stride, down)]
            blocks += [BasicBlock(out_ch, out_ch) for _ in range(BLOCKS_PER_STAGE - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        # torchvision's init: He for convs, and the last BN of each block at zero, so every
        # residual block starts as the identity
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, C0, R or R/4, ...)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C3, h, w)


class ImageEncoder(ModelMixin, ConfigMixin):
    """Images in [-1, 1] (B, 3, R, R) -> `Embeddings` (pooled (B, D), patch tokens (B, h*w, Dt))."""

    name = "image"
    trainable = True

    @register_to_config
    def __init__(
        self,
        resolution: int = 32,  # R: input side in pixels; other sizes are rejected (the token count depends on it)
        pooled_dim: int = 128,  # D: width of the pooled image vector
        token_dim: int = 128,  # Dt: width of each patch token
        channels: tuple[int, ...] = RESNET18_CHANNELS,  # widths of the 4 ResNet stages (ResNet-18's; tiny in tests)
        small_input_stem: bool | None = None,  # True = 3x3 stride-1 stem, no max-pool; None = True when R <= 64
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)  # JSON configs give lists
        if not isinstance(resolution, int) or resolution < 8:
            raise GanError(f"image encoder: resolution must be an integer >= 8, got {resolution!r}")
        if len(channels) != 4 or min(channels) < 1:
            raise GanError(f"image encoder: channels must be 4 positive stage widths, got {channels}")
        if min(pooled_dim, token_dim) < 1:
            raise GanError(f"image encoder: pooled_dim and token_dim must be >= 1, got {pooled_dim}, {token_dim}")
        small = resolution <= SMALL_STEM_MAX_RESOLUTION if small_input_stem is None else bool(small_input_stem)
        self.small_stem = small
        self.trunk = ResNetTrunk(channels, small)
        side = resolution
        for _ in range(3 if small else 5):  # every stride-2 layer maps n -> ceil(n / 2)
            side = -(-side // 2)
        self.feature_side = side  # h = w of the final map
        self.to_tokens = nn.Linear(channels[-1], token_dim)
        # Conv features carry no absolute position; this tells the generator where a patch was.
        self.pos = nn.Parameter(torch.randn(1, side * side, token_dim) * 0.02)  # (1, L, Dt)
        self.to_pooled = nn.Linear(channels[-1], pooled_dim)

    # the encoder interface attributes, read from the config so they cannot drift from the weights
    @property
    def pooled_dim(self) -> int:
        return self.config.pooled_dim

    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @property
    def max_length(self) -> int:
        return self.feature_side**2

    def forward(self, images: torch.Tensor) -> Embeddings:
        R = self.config.resolution
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, R, R):
            raise GanError(f"image encoder: expected images (B, 3, {R}, {R}) in [-1, 1], got {tuple(images.shape)}")
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        x = ((images.float() + 1) / 2 - mean) / std  # [-1, 1] -> ImageNet normalisation
        fmap = self.trunk(x)  # (B, C, h, w)
        tokens = self.to_tokens(fmap.flatten(2).transpose(1, 2)) + self.pos  # (B, h*w, Dt)
        pooled = self.to_pooled(fmap.mean(dim=(2, 3)))  # (B, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, h*w)
        return Embeddings(pooled=pooled, tokens=tokens, mask=mask)

    def encode_images(self, images) -> Embeddings:
        """Embeds PIL images or image files (PNG/JPEG, any mode), centre-cropped and resized to R.

        Runs in eval mode under no_grad and restores the previous mode, so it is safe to call
        in the middle of training (e.g. for sample grids).
        """
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            raise GanError("image encoder: expected at least one image or image file, got an empty list")
        R = self.config.resolution
        arrays = [_load(item, R) for item in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, R, R)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self(x.to(self.device))
        finally:
            self.train(was_training)

    @classmethod
    def from_torchvision_weights(cls, path: str | Path, **config) -> "ImageEncoder":
        """An encoder whose trunk holds torchvision's ResNet-18 weights, read from a local file.

        Nothing is downloaded. The ImageNet classifier (`fc.*`) is dropped; the token and pooled
        projections stay freshly initialised. Only the ImageNet stem fits these weights.
        """
        path = Path(path)
        what = f"image encoder weights {path}"
        if not path.is_file():
            raise GanError(
                f"{what}: file not found. Expected torchvision's ResNet-18 ImageNet state dict "
                f"({TORCHVISION_FILE}, from {TORCHVISION_URL}); download it on a machine with "
                f"internet access and pass its local path"
            )
        model = cls(**config)
        if model.small_stem:
            raise GanError(
                f"{what}: torchvision's ResNet-18 weights need the ImageNet stem (7x7 stride-2 conv and "
                f"max-pool), but this encoder uses the small 3x3 stem (resolution {model.config.resolution} "
                f"<= {SMALL_STEM_MAX_RESOLUTION} picks it by default); pass small_input_stem=False"
            )
        state = {k: v for k, v in load_weights_file(path, what).items() if not k.startswith("fc.")}
        expected = model.trunk.state_dict()
        state = check_state_dict(state, expected, what, optional=lambda k: k.endswith("num_batches_tracked"))
        model.trunk.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
        return model

    def export(self, folder: Path) -> dict:
        self.save_pretrained(Path(folder) / SUBFOLDER)
        return {"type": "image", "path": SUBFOLDER}

    @classmethod
    def load(cls, folder: Path, subfolder: str = SUBFOLDER) -> "ImageEncoder":
        path = Path(folder) / subfolder
        if not (path / "config.json").is_file():
            raise GanError(f"image encoder: {path} needs config.json and the weights (written by export)")
        return load_model_folder(cls, path, "image encoder").eval()


def _load(item, resolution: int) -> np.ndarray:
    """One PIL image or file as (R, R, 3) uint8 RGB: centre square crop, antialiased resize."""
    if isinstance(item, Image.Image):
        im = to_rgb(item)
    elif isinstance(item, (str, Path)):
        try:
            with Image.open(item) as f:
                im = to_rgb(ImageOps.exif_transpose(f))  # camera photos store rotation in EXIF
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise GanError(f"image encoder: {item} is missing or not a readable image ({e})") from None
    else:
        raise GanError(f"image encoder: expected a PIL image or a file path, got {type(item).__name__}")
    return square_resize(im, resolution)
