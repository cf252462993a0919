"""Shared fixtures: a tiny shapes dataset and a tiny training config, built once per session."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """64 train / 16 test samples of the built-in shapes data at 32 px."""
    from gan.data.shapes import write_shapes

    out = tmp_path_factory.mktemp("data") / "shapes"
    write_shapes(out, 64, 16, size=32, seed=0, progress=False)
    return out


TINY_CONFIG = """
name = "tiny"
[data]
root = "{root}"
resolution = 16
[model]
z_dim = 16
g_channels = 8
g_max_channels = 16
d_channels = 8
d_max_channels = 16
attention_resolutions = [8]
[train]
batch_size = 8
max_steps = 4
log_every = 1
sample_every = 2
checkpoint_every = 2
output_dir = "{runs}"
"""


# Overrides that turn TINY_CONFIG into each task's tiny run (video repair also needs clip data).
TASK_OVERRIDES = {
    "text-to-image": [],
    # 16 px images, 16 x 16 spectrograms (hop 1000 at 16 kHz: 16 frames per second)
    "joint": ["task=joint", "text.use_tokens=false", "joint.n_mels=16", "joint.hop_length=1000",
              "joint.audio_channels=4", "joint.griffin_lim_iters=4"],
    "video-repair": ["task=video-repair", "model.g_channels=4", "model.d_channels=4", "repair.frames=4",
                     "train.batch_size=2"],
}


@pytest.fixture(scope="session")
def make_tiny_config(tiny_shapes):
    """folder -> folder/tiny.toml, training on tiny_shapes into folder/runs (for module-scoped runs)."""
    def make(folder: Path) -> Path:
        path = folder / "tiny.toml"
        path.write_text(TINY_CONFIG.format(root=tiny_shapes.as_posix(), runs=(folder / "runs").as_posix()))
        return path
    return make


@pytest.fixture
def tiny_config(tmp_path, make_tiny_config) -> Path:
    return make_tiny_config(tmp_path)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The folder holding this environment's `gan` and `accelerate` commands."""
    return Path(sys.executable).parent


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): its
    tensors are tiny, and on a shared 2-core box a 2-thread team spins and runs several times slower
    than one thread (KID's 200 x 200 kernels: 10-25x next to a training run)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _checkpoint_tensors(folder):
    """Every tensor of a checkpoint's safetensors files (G, D, EMA), keyed file/name."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}/{k}": v for k, v in load_file(f).items()})
    return out


def _optimizer_states(folder):
    """Adam moments, step counts and learning rates of a checkpoint's optimizers, keyed file/param/name."""
    import torch

    out = {}
    for f in sorted(folder.glob("optimizer*.bin")):
        saved = torch.load(f, weights_only=True)
        out[f"{f.name}/lr"] = torch.tensor([g["lr"] for g in saved["param_groups"]])
        for i, s in saved["state"].items():
            out.update({f"{f.name}/{i}/{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return out


@pytest.fixture(scope="session")
def checkpoint_readers():
    """(tensors, optimizer_states): read a checkpoint folder back for comparisons."""
    return _checkpoint_tensors, _optimizer_states
