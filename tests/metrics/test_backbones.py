import hashlib
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from gan.errors import GanError
from gan.metrics import backbones as B
from gan.metrics.backbones import (
    INCEPTION_ENV,
    INCEPTION_FILE,
    FeatureBackbone,
    available_backbones,
    build_backbone,
    find_inception_weights,
    register_backbone,
    write_random_inception_weights,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    return Path(write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random.safetensors"))


@pytest.fixture(scope="module")
def inception(random_weights) -> FeatureBackbone:
    return build_backbone("inception", inception_weights=str(random_weights))


def images(n=2, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)  # (B, 3, H, W)


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    """Neither the env var nor the real hub cache can supply Inception weights."""
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints" / INCEPTION_FILE


# ---------------------------------------------------------------------------------------------
# inception


def test_inception_features_logits_and_provenance(inception, random_weights):
    x = images()
    out = inception(x)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert out["features"].dtype == torch.float32 and out["logits"].dtype == torch.float32
    assert torch.isfinite(out["features"]).all() and torch.isfinite(out["logits"]).all()
    assert out["features"].abs().mean() > 1e-3  # the random weights are scaled to give O(1) features
    again = inception(x)
    assert torch.equal(out["features"], again["features"]) and torch.equal(out["logits"], again["logits"])
    assert (inception.feature_dim, inception.num_classes, inception.resize) == (2048, 1008, "tf-bilinear")
    assert inception.weights_sha256 == hashlib.sha256(random_weights.read_bytes()).hexdigest()
    prov = inception.provenance()
    assert prov["name"] == "inception" and prov["input_size"] == 299
    assert prov["weights"] == str(random_weights.resolve()) and prov["weights_sha256"] == inception.weights_sha256
    assert "non-reference" in prov["comparable_with"]  # random weights are not the published file


def test_resize_modes_give_different_features(inception, random_weights):
    x = images(seed=1)
    anti = build_backbone("inception", inception_weights=str(random_weights), resize="antialias")
    assert anti.resize == "antialias" and anti.provenance()["resize"] == "antialias"
    a, b = inception(x)["features"], anti(x)["features"]
    assert not torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    with pytest.raises(GanError, match="tf-bilinear, antialias"):
        build_backbone("inception", inception_weights=str(random_weights), resize="bicubic")


def test_random_weights_file_is_deterministic(random_weights, tmp_path):
    again = write_random_inception_weights(tmp_path / "again.safetensors", seed=0)
    assert Path(again).read_bytes() == random_weights.read_bytes()


def test_missing_weights_say_where_to_get_them(no_weights_anywhere):
    with pytest.raises(GanError) as e:
        build_backbone("inception")
    msg = str(e.value)
    for part in (INCEPTION_FILE, "--inception-weights", INCEPTION_ENV, str(no_weights_anywhere), B.INCEPTION_URL):
        assert part in msg, part


def test_weights_lookup_order(no_weights_anywhere, monkeypatch, tmp_path):
    no_weights_anywhere.parent.mkdir(parents=True)
    no_weights_anywhere.write_bytes(b"x")
    assert find_inception_weights() == no_weights_anywhere
    env = tmp_path / "env.pth"
    env.write_bytes(b"x")
    monkeypatch.setenv(INCEPTION_ENV, str(env))
    assert find_inception_weights() == env
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert find_inception_weights(str(explicit)) == explicit
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(GanError, match=f"{INCEPTION_ENV}=.*gone.pth"):
        find_inception_weights()
    with pytest.raises(GanError, match="--inception-weights .*nope.pth"):
        find_inception_weights(str(tmp_path / "nope.pth"))


def _touch(path):
    """What the pickle payload would call: harmless, but leaves a trace if it ever runs."""
    Path(path).write_text("unpickling ran code")
    return {}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran.txt"
    # the payload is live: plain unpickling does run it
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "control.txt"))))
    assert (tmp_path / "control.txt").exists()

    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))  # torch.load warns on others
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": _Payload(str(marker))}, wrapped)
    for path in (plain, wrapped):
        with pytest.raises(GanError, match=re.escape(str(path))):
            build_backbone("inception", inception_weights=str(path))
    with pytest.raises(GanError, match=r"pickled Python objects besides tensors \(it refers to \S*_touch\)"):
        build_backbone("inception", inception_weights=str(wrapped))
    assert not marker.exists()


def test_weights_that_do_not_fit_are_refused(random_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    small = tmp_path / "small.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(small))
    fit = r"missing keys \(\d+\): Conv2d_1a_3x3.conv.weight.*unexpected keys \(1\): foo.weight"
    with pytest.raises(GanError, match=fit):
        build_backbone("inception", inception_weights=str(small))

    state = load_file(str(random_weights))
    state["fc.weight"] = torch.zeros(10, 2048)
    reshaped = tmp_path / "reshaped.pt"
    torch.save(state, reshaped)
    with pytest.raises(GanError, match=r"wrong shapes \(1\): fc.weight \(10, 2048\) \(expected \(1008, 2048\)\)"):
        build_backbone("inception", inception_weights=str(reshaped))

    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(GanError, match="suffix '.npz'"):
        build_backbone("inception", inception_weights=str(tmp_path / "w.npz"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(GanError, match="junk.pth"):
        build_backbone("inception", inception_weights=str(tmp_path / "junk.pth"))


def _real_weights() -> Path | None:
    env = os.environ.get(INCEPTION_ENV)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return Path(env) if env and Path(env).is_file() else cached if cached.is_file() else None


def test_real_inception_weights():
    path = _real_weights()
    if path is None:
        pytest.skip(f"the real {INCEPTION_FILE} is neither in ${INCEPTION_ENV} nor in the torch hub cache")
    backbone = build_backbone("inception", inception_weights=str(path))
    # hub naming: the file name carries the start of its SHA-256
    assert backbone.weights_sha256.startswith(B.INCEPTION_SHA256_PREFIX)
    assert "published" in backbone.provenance()["comparable_with"]
    gray = torch.full((2, 3, 64, 64), 128, dtype=torch.uint8)
    out = backbone(gray)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["features"]).all() and torch.isfinite(out["logits"]).all()
    assert (out["features"] >= 0).all()  # pooled ReLU activations


# ---------------------------------------------------------------------------------------------
# dataset, torchvision, registry


def test_dataset_backbone(tiny_shapes):
    backbone = build_backbone("dataset", dataset_root=str(tiny_shapes), resolution=32, progress=False)
    x = images(3)
    out = backbone(x)
    assert out["features"].shape == (3, 128) and out["logits"].shape == (3, 240) and backbone.num_classes == 240
    again = backbone(x)
    assert torch.equal(out["features"], again["features"]) and torch.equal(out["logits"], again["logits"])
    # joint logits: their softmax is the product of the four heads' softmaxes
    heads = backbone.classifier(x.float() / 127.5 - 1)
    p = [torch.softmax(heads[n], 1) for n in ("color", "shape", "size", "position")]
    product = torch.einsum("na,nb,nc,nd->nabcd", *p).flatten(1)  # (B, 240)
    assert torch.allclose(torch.softmax(out["logits"], 1), product, atol=1e-6)
    assert backbone(images(2, size=64))["features"].shape == (2, 128)  # resized to the classifier's 32 px
    assert re.fullmatch("[0-9a-f]{64}", backbone.weights_sha256)
    assert "NOT comparable with Inception FID" in backbone.provenance()["comparable_with"]
    with pytest.raises(GanError, match="dataset root"):
        build_backbone("dataset")
    with pytest.raises(GanError, match=r"uint8 images of shape \(B, 3, H, W\)"):
        backbone(x.float())


def test_torchvision_backbone(tmp_path):
    backbone = build_backbone("torchvision:resnet18", allow_random_weights=True)
    out = backbone(images())
    assert out["features"].shape == (2, 512) and out["logits"].shape == (2, 1000)
    assert (backbone.feature_dim, backbone.num_classes) == (512, 1000)
    assert torch.isfinite(out["features"]).all()
    with pytest.raises(GanError, match="needs a local weights file.*--backbone-weights"):
        build_backbone("torchvision:resnet18")
    with pytest.raises(GanError, match="unknown model"):
        build_backbone("torchvision:nonsense_net", allow_random_weights=True)

    # a weights file is loaded, checked and hashed
    import torchvision

    net = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    loaded = build_backbone("torchvision:resnet18", weights=str(path))
    assert torch.equal(loaded.net.conv1.weight, net.conv1.weight) and torch.equal(loaded.head.weight, net.fc.weight)
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


class MeanColor(FeatureBackbone):
    """A toy user backbone: the mean of each channel."""

    def __init__(self, resolution=None):
        super().__init__()
        self.name, self.feature_dim, self.resize = "mean-color", 3, "none"
        self.resolution = resolution
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images):
        self.check_images(images)
        return {"features": images.float().mean((2, 3)) * self.scale}  # (B, 3)


def test_register_backbone_round_trip(monkeypatch):
    monkeypatch.setattr(B, "_CUSTOM", {})
    register_backbone("mean-color", MeanColor)  # takes only `resolution`: the other keywords are left out
    assert "mean-color" in available_backbones()
    backbone = build_backbone("mean-color", resolution=16)
    assert isinstance(backbone, MeanColor) and backbone.resolution == 16 and not backbone.training
    assert backbone(images())["features"].shape == (2, 3)
    assert backbone.provenance()["name"] == "mean-color"

    with pytest.raises(GanError, match="unknown; available: inception, dataset, torchvision:<model>, mean-color"):
        build_backbone("nope")
    register_backbone("plain", lambda **kw: "not a module")
    with pytest.raises(GanError, match="returned a str; expected a FeatureBackbone"):
        build_backbone("plain")
    register_backbone("bare", lambda **kw: torch.nn.Linear(1, 1))
    with pytest.raises(GanError, match="its Linear lacks name, feature_dim, weights_sha256, resize, provenance"):
        build_backbone("bare")
    with pytest.raises(GanError, match="other than inception, dataset"):
        register_backbone("inception", MeanColor)
