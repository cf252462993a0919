import json
import os
from pathlib import Path

import pytest
import torch

from gan.errors import GanError
from gan.metrics import attributes as A
from gan.metrics.attributes import (
    AttributeClassifier,
    attribute_accuracy,
    load_or_train_classifier,
    predict_attributes,
    train_attribute_classifier,
)

shapes = pytest.importorskip("gan.data.shapes", reason="the shapes data module is not available")


@pytest.fixture(scope="session")
def small_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("attr") / "shapes"
    shapes.write_shapes(root, n_train=600, n_test=200, size=32, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def trained(small_shapes):
    return train_attribute_classifier(
        small_shapes / "train", small_shapes / "test", epochs=8, batch_size=64, width=16, progress=False
    )


def test_short_training_beats_chance(trained):
    model, acc = trained
    assert set(acc) == {"color", "shape", "size", "position", "mean", "all"}
    # chance is 1/8 for color and 1/5 for position
    assert acc["color"] > 0.8 and acc["position"] > 0.8, acc
    assert acc["mean"] == pytest.approx(sum(acc[n] for n in A.NAMES) / 4)
    assert 0 <= acc["all"] <= min(acc[n] for n in A.NAMES)


def test_test_accuracy_matches_predictions(trained, small_shapes):
    model, acc = trained
    images, labels = A.load_split(small_shapes / "test", 32, progress=False)
    preds = predict_attributes(model, images.float() / 127.5 - 1, batch_size=64)
    assert preds["color"].shape == (200,) and preds["color"].dtype == torch.long
    assert (preds["color"] == labels[:, 0]).float().mean().item() == pytest.approx(acc["color"])
    rows = [json.loads(line)["attributes"] for line in (small_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    assert attribute_accuracy(model, images.float() / 127.5 - 1, rows) == pytest.approx(acc)


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path / "clf")
    assert list((tmp_path / "clf").glob("*.safetensors"))
    again = AttributeClassifier.from_pretrained(tmp_path / "clf").eval()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = model.eval()(x), again(x)
        assert model.features(x).shape == (5, 128)
    for name in A.NAMES:
        assert torch.equal(a[name], b[name])
    assert a["color"].shape == (5, 8) and a["position"].shape == (5, 5)


class FixedLogits(AttributeClassifier):
    """Returns preset logits whatever the images are, to check the accuracy arithmetic."""

    def __init__(self, predicted: dict[str, list[int]]):
        super().__init__(width=4, feature_dim=8)
        self.predicted = predicted

    def forward(self, images):
        return {n: torch.nn.functional.one_hot(torch.tensor(p), k).float()
                for (n, p), k in zip(self.predicted.items(), self.config.num_classes)}


def test_attribute_accuracy_closed_form():
    C = shapes.ATTRIBUTES
    wanted = [
        {"color": "red", "shape": "circle", "size": "small", "position": "top left"},
        {"color": "blue", "shape": "square", "size": "large", "position": "center"},
        {"color": "white", "shape": "triangle", "size": "small", "position": "bottom right"},
        {"color": "green", "shape": "circle", "size": "large", "position": "top right"},
    ]
    truth = {n: [C[n].index(w[n]) for w in wanted] for n in A.NAMES}
    predicted = {
        "color": truth["color"][:3] + [C["color"].index("red")],  # 3 of 4 right
        "shape": truth["shape"],  # all right
        "size": [truth["size"][0], 0, 1, truth["size"][3]],  # rows 1, 2 wrong: 2 of 4
        "position": [truth["position"][0], 0, 0, 0],  # only row 0 right
    }
    assert predicted["size"][1] != truth["size"][1] and predicted["size"][2] != truth["size"][2]
    acc = attribute_accuracy(FixedLogits(predicted), torch.zeros(4, 3, 32, 32), wanted)
    assert acc == pytest.approx({"color": 0.75, "shape": 1.0, "size": 0.5, "position": 0.25, "mean": 0.625, "all": 0.25})


def test_bad_inputs_are_gan_errors():
    model = AttributeClassifier(width=4, feature_dim=8)
    good = {"color": "red", "shape": "circle", "size": "small", "position": "top left"}
    with pytest.raises(GanError, match="row 1: 'color'"):
        attribute_accuracy(model, torch.zeros(2, 3, 32, 32), [good, {**good, "color": "pink"}])
    with pytest.raises(GanError, match="2 images for 1"):
        attribute_accuracy(model, torch.zeros(2, 3, 32, 32), [good])
    with pytest.raises(GanError, match=r"\(N, 3, 32, 32\)"):
        predict_attributes(model, torch.zeros(2, 3, 64, 64))


def test_load_or_train_reuses_the_cache(small_shapes, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    for split in ("train", "test"):  # links keep the fixture's files but give this test its own .cache
        (root / split).symlink_to(small_shapes / split)
    calls = []

    def quick(train_dir, test_dir, resolution=32, progress=True, **kw):
        calls.append(train_dir)
        return train_attribute_classifier(train_dir, test_dir, resolution, epochs=1, width=8, progress=False)

    monkeypatch.setattr(A, "train_attribute_classifier", quick)
    m1, acc1 = load_or_train_classifier(root, progress=False)
    folders = list((root / ".cache").iterdir())
    assert len(calls) == 1 and len(folders) == 1 and folders[0].name.startswith("attribute-classifier-")
    assert folders[0].name.endswith("-32") and (folders[0] / "accuracy.json").is_file()
    m2, acc2 = load_or_train_classifier(root, progress=False)
    assert len(calls) == 1 and acc2 == pytest.approx(acc1)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m1.eval()(x)["shape"], m2(x)["shape"])
    # another dataset (different metadata bytes) gets its own classifier
    other = tmp_path / "other"
    other.mkdir()
    (other / "train").symlink_to(small_shapes / "test")
    (other / "test").symlink_to(small_shapes / "test")
    load_or_train_classifier(other, progress=False)
    assert len(calls) == 2


def test_metadata_without_attributes(tmp_path):
    split = tmp_path / "train"
    (split / "images").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(split / "images" / "a.png")
    (split / "metadata.jsonl").write_text(json.dumps({"file_name": "images/a.png", "text": "a red circle"}) + "\n")
    with pytest.raises(GanError, match="metadata.jsonl row 0: 'color'"):
        A.load_split(split, 32, progress=False)
    with pytest.raises(GanError, match="test/metadata.jsonl not found"):
        load_or_train_classifier(tmp_path, progress=False)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GAN_SHAPES_FULL"), reason="set GAN_SHAPES_FULL to a 20000/2000 shapes dataset")
def test_full_dataset_accuracy():
    root = Path(os.environ["GAN_SHAPES_FULL"])
    _, acc = train_attribute_classifier(root / "train", root / "test", progress=False)
    assert all(acc[n] >= 0.98 for n in A.NAMES), acc
