"""Model folders a user hands us: only safetensors, the class config.json names, tensors that match."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from gan.cli import main
from gan.errors import GanError
from gan.models.generator import ConditionalGenerator
from gan.weights import load_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this runs code: it would write `marker`. Nothing may ever unpickle it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def export(tmp_path):
    """A tiny exported text-to-image generator, as train_gan.py writes it."""
    folder = tmp_path / "run" / "generator"
    G = ConditionalGenerator(resolution=16, z_dim=4, cond_dim=384, token_dim=None, base_channels=4,
                             max_channels=8, attention_resolutions=())
    G.save_pretrained(folder)
    (folder / "condition.json").write_text(json.dumps(
        {"task": "text-to-image", "modalities": ["text"], "use_tokens": False, "encoders": {},
         "text_encoder": {"type": "minilm", "max_length": 32}}))
    return folder


def _weights(folder):
    return next(folder.glob("*.safetensors"))


def test_a_good_folder_loads(export):
    G = load_model_folder(ConditionalGenerator, export, "generator")
    assert G.config.base_channels == 4


def test_config_naming_another_class_is_refused(export, capsys):
    config = json.loads((export / "config.json").read_text())
    config["_class_name"] = "os.system"
    (export / "config.json").write_text(json.dumps(config))
    assert main(["sample", "--checkpoint", str(export.parent), "--prompt", "a red circle", "--out",
                 str(export.parent / "s")]) == 2
    err = capsys.readouterr().err
    assert "config.json names class 'os.system'; expected 'ConditionalGenerator'" in err
    assert not (export.parent / "s").exists()  # nothing written


def test_a_pickle_in_place_of_safetensors_is_never_unpickled(export, tmp_path):
    marker = tmp_path / "pwned"
    _weights(export).unlink()
    with open(export / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(GanError, match=r"no \.safetensors weights \(found \['diffusion_pytorch_model.bin'\]\)"):
        load_model_folder(ConditionalGenerator, export, "generator")
    assert not marker.exists()


def test_tensors_that_do_not_match_the_config_are_refused(export):
    config = json.loads((export / "config.json").read_text())
    config["base_channels"] = 8  # the stored tensors are for width 4
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(GanError, match="weights do not match its config.json or are damaged: .*size mismatch"):
        load_model_folder(ConditionalGenerator, export, "generator")


def test_missing_or_extra_tensors_are_refused_not_initialised_at_random(export):
    tensors = load_file(_weights(export))
    tensors.pop("to_rgb.weight")
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, _weights(export))
    with pytest.raises(GanError, match=r"missing \['to_rgb.weight'\], unexpected \['extra.weight'\]"):
        load_model_folder(ConditionalGenerator, export, "generator")


def test_damaged_safetensors_and_config_are_clear_errors(export):
    _weights(export).write_bytes(b"\x00" * 10)
    with pytest.raises(GanError, match="damaged"):
        load_model_folder(ConditionalGenerator, export, "generator")
    (export / "config.json").write_text("{not json")
    with pytest.raises(GanError, match="unreadable config.json"):
        load_model_folder(ConditionalGenerator, export, "generator")
