import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from gan.encoders.image import ImageEncoder
from gan.errors import GanError

TINY = dict(resolution=32, pooled_dim=10, token_dim=12, channels=(4, 8, 8, 16))


def tiny(**kw):
    torch.manual_seed(0)
    return ImageEncoder(**{**TINY, **kw}).eval()


def images(B=2, R=32, seed=1):
    return torch.rand(B, 3, R, R, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_small_stem_keeps_a_4x4_map():
    enc = tiny()
    assert enc.small_stem and enc.max_length == 16
    assert (enc.name, enc.pooled_dim, enc.token_dim, enc.trainable) == ("image", 10, 12, True)
    out = enc(images())
    assert out.pooled.shape == (2, 10) and out.tokens.shape == (2, 16, 12) and out.mask.shape == (2, 16)
    assert out.mask.all() and torch.isfinite(out.tokens).all()
    # the ImageNet stem divides by 32: one position at 32 px, 2x2 at 64 px
    assert tiny(small_input_stem=False).max_length == 1
    assert not tiny(resolution=128).small_stem and tiny(resolution=128).max_length == 16


def test_wrong_image_size_is_a_gan_error():
    with pytest.raises(GanError, match=r"\(B, 3, 32, 32\)"):
        tiny()(images(R=16))
    with pytest.raises(GanError, match="channels"):
        ImageEncoder(channels=(4, 8))


def test_gradients_reach_the_trunk():
    enc = tiny().train()
    out = enc(images(B=3))
    (out.pooled.sum() + out.tokens.sum()).backward()
    assert enc.trunk.conv1.weight.grad.abs().sum() > 0


def test_save_load_and_export_round_trips(tmp_path):
    enc = tiny()
    x = images()
    ref = enc(x)
    enc.save_pretrained(tmp_path / "plain")
    again = ImageEncoder.from_pretrained(tmp_path / "plain").eval()
    assert torch.equal(again(x).pooled, ref.pooled) and torch.equal(again(x).tokens, ref.tokens)
    spec = enc.export(tmp_path / "run")
    assert spec == {"type": "image", "path": "image_encoder"}
    loaded = ImageEncoder.load(tmp_path / "run", spec["path"])
    assert not loaded.training and loaded.config.channels == [4, 8, 8, 16]
    assert torch.equal(loaded(x).pooled, ref.pooled)
    with pytest.raises(GanError, match="config.json"):
        ImageEncoder.load(tmp_path / "nothing")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net.eval()


def test_from_torchvision_weights_loads_the_trunk(resnet18_file):
    path, net = resnet18_file
    enc = ImageEncoder.from_torchvision_weights(path, resolution=64, small_input_stem=False, pooled_dim=8, token_dim=8)
    ours = enc.trunk.state_dict()
    theirs = net.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())
    # the trunk computes what torchvision's ResNet-18 computes before its pooling
    x = torch.rand(1, 3, 64, 64)
    body = torch.nn.Sequential(*list(net.children())[:-2])
    with torch.no_grad():
        assert torch.allclose(enc.eval().trunk(x), body(x), atol=1e-5)


def test_from_torchvision_weights_errors(resnet18_file, tmp_path):
    path, net = resnet18_file
    with pytest.raises(GanError, match="small_input_stem=False"):
        ImageEncoder.from_torchvision_weights(path, resolution=32)  # <= 64 px picks the small stem
    with pytest.raises(GanError, match="resnet18-f37072fd.pth"):
        ImageEncoder.from_torchvision_weights(tmp_path / "absent.pth", small_input_stem=False)
    state = net.state_dict()
    state["layer9.weight"] = state.pop("layer4.1.conv2.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(GanError, match=r"missing keys.*layer4\.1\.conv2\.weight.*unexpected keys.*layer9\.weight"):
        ImageEncoder.from_torchvision_weights(tmp_path / "renamed.pth", small_input_stem=False)
    with pytest.raises(GanError, match="wrong shapes"):  # tiny channels do not fit ResNet-18
        ImageEncoder.from_torchvision_weights(path, **{**TINY, "small_input_stem": False})


def test_encode_images_from_files_of_any_mode(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # not square: centre-cropped
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    enc = tiny().train()
    out = enc.encode_images([tmp_path / "rgb.png", str(tmp_path / "rgba.png"), tmp_path / "gray.png"])
    assert out.pooled.shape == (3, 10) and out.tokens.shape == (3, 16, 12)
    assert enc.training and not out.pooled.requires_grad  # eval + no_grad inside, mode restored
    # an opaque RGBA file is the same picture as its RGB source; a PIL image works like a file
    assert torch.allclose(out.pooled[0], out.pooled[1], atol=1e-5)
    alone = enc.encode_images(Image.fromarray(rgb))
    assert torch.allclose(alone.pooled[0], out.pooled[0], atol=1e-5)


def test_encode_images_bad_files_are_named(tmp_path):
    enc = tiny()
    with pytest.raises(GanError, match="nope.png"):
        enc.encode_images([tmp_path / "nope.png"])
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(GanError, match="junk.jpg"):
        enc.encode_images([tmp_path / "junk.jpg"])
    with pytest.raises(GanError, match="at least one"):
        enc.encode_images([])


def test_instance_embedding_is_stable_under_small_noise():
    # Even untrained, the encoder is a smooth function: a slightly perturbed image lands much
    # closer to its source than other images do, which is what instance conditioning relies on.
    enc = tiny()
    x = images(B=4, seed=3)
    noisy = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(-1, 1)
    with torch.no_grad():
        a, b = enc(x).pooled, enc(noisy).pooled
    d = torch.cdist(b, a)  # (4, 4): noisy i vs clean j
    assert (d.argmin(dim=1) == torch.arange(4)).all()
