"""The joint task end to end on the tiny shapes data: train, export, sample pairs + HTML, evaluate."""

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from gan.cli import main
from gan.config import load_config
from gan.joint.sampling import JointSampler
from gan.sampling import to_uint8
from gan.training.joint_steps import shifted_pairs
from gan.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# 16 px images, 16 x 16 spectrograms (hop 1000 at 16 kHz: 16 frames per second); the generator reads the
# caption's word tokens (the pooled-only path runs in tests/training/test_resume_all_tasks.py)
JOINT = ["task=joint", "joint.n_mels=16", "joint.hop_length=1000", "joint.audio_channels=4",
         "joint.griffin_lim_iters=4", "train.checkpoint_every=1000", "train.sample_every=0"]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k == "src"]


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, make_tiny_config):
    tmp = tmp_path_factory.mktemp("joint")
    cfg = load_config(make_tiny_config(tmp), [*JOINT, "train.max_steps=120", "train.run_name=joint", "train.batch_size=16",
                             "loss.diffaugment=", "optim.d_lr=1e-3", "train.sample_every=120"])
    trainer = Trainer(cfg)
    run = trainer.train()
    return trainer, run, tmp


def test_training_teaches_the_joint_head_to_reject_mismatched_pairs(joint_run):
    trainer, run, _ = joint_run
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    mismatch = [s["loss/joint_mismatch"] for s in stats]
    assert len(mismatch) == 120
    first, last = sum(mismatch[:10]) / 10, sum(mismatch[-20:]) / 20
    # the joint head's hinge loss on (own sound = real, another row's sound = fake): 2.0 knows nothing
    assert first > 1.8 and last < first - 0.3, (first, last)  # measured 2.00 -> 1.2
    # on real rows, D now scores matched (image, its own sound) above (image, another row's sound)
    D = trainer.accelerator.unwrap_model(trainer.D).eval()
    batch = next(iter(trainer.loader))
    from gan.data.audio_bank import to_float
    from gan.joint.mel import waveform_to_mel

    index = batch["index"]
    mels = waveform_to_mel(to_float(trainer.audio_bank[index]), trainer.mel_settings)
    cond = trainer._condition(index, batch["image"]).pooled.float()
    with torch.no_grad():
        out = D(batch["image"], mels, cond, pairs=shifted_pairs(len(index), "cpu"))
    assert out["joint"].mean() > out["pairs"].mean()
    G = trainer.accelerator.unwrap_model(trainer.G)
    assert sorted(G.attn) == ["4", "8"] and all(float(a.gate.detach()) != 0 for a in G.attn.values())  # words were used
    preview = run / "samples" / "step-0000120"
    assert (run / "samples" / "step-0000120.png").is_file() and (preview / "index.html").is_file()


def test_sample_writes_png_wav_pairs_and_an_html_page_linking_them(joint_run, tmp_path, capsys):
    _, run, _ = joint_run
    out = tmp_path / "pairs"
    assert main(["sample", "--checkpoint", str(run), "--num", "3", "--out", str(out), "--griffin-lim-iters", "4"]) == 0
    assert "wrote 3 image + sound pairs" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.wav")) == ["0000.wav", "0001.wav", "0002.wav"]
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert len(parser.links) == 9  # image, spectrogram and sound of each pair
    assert all((out / link).is_file() for link in parser.links)
    wave, rate = sf.read(out / "0000.wav")
    assert rate == 16000 and wave.shape == (16000,) and abs(wave).max() <= 1
    # each PNG holds its generated picture, pixel for pixel (shown 4x larger, nearest neighbour)
    images, _, _ = JointSampler.from_pretrained(run).generate(None, 3, seed=0)
    for i in range(3):
        png = np.asarray(Image.open(out / f"{i:04d}.png").convert("RGB"))
        assert png.shape == (4 * 16, 4 * 16, 3)
        assert np.array_equal(png[::4, ::4], to_uint8(images[i]).permute(1, 2, 0).numpy())
        assert len(np.unique(png.reshape(-1, 3), axis=0)) > 1  # not one flat colour
    captioned = tmp_path / "captioned"
    assert main(["sample", "--checkpoint", str(run), "--prompt", "a big red circle at the top left", "--prompt",
                 "a small blue square in the center", "--num", "2", "--out", str(captioned)]) == 0
    assert "a small blue square in the center" in (captioned / "index.html").read_text()
    assert len(list(captioned.glob("*.png"))) == 8  # 4 pictures + 4 spectrograms
    assert main(["sample", "--checkpoint", str(run), "--audio", "x.wav", "--out", str(tmp_path / "bad")]) == 2
    assert "--prompt only" in capsys.readouterr().err


def test_eval_reports_fid_fad_consistency_and_attr_with_provenance(joint_run, tiny_shapes, tmp_path, capsys):
    _, run, _ = joint_run
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--data", str(tiny_shapes / "test"), "--num", "32",
                 "--metrics", "consistency,attr", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    cons, attr = result["metrics"]["consistency"], result["metrics"]["attr"]
    assert set(cons) == {"captioned", "uncaptioned", "drawn_captions", "captioned_seen", "captioned_heldout"}
    assert set(attr) == {"image", "audio", "image_seen", "image_heldout", "audio_seen", "audio_heldout"}
    # The per-wording scores split the same 32 rows (the 16 test rows cycled): their weighted mean is the whole.
    rows = [json.loads(x) for x in (tiny_shapes / "test" / "metadata.jsonl").read_text().splitlines()]
    share = sum(rows[i % len(rows)]["wording"] == "seen" for i in range(32)) / 32
    assert 0 < share < 1
    for whole, part in [(cons, "captioned"), (attr, "image"), (attr, "audio")]:
        for k in ("color", "mean", "all"):
            mixed = share * whole[f"{part}_seen"][k] + (1 - share) * whole[f"{part}_heldout"][k]
            assert abs(mixed - whole[part][k]) < 1e-5, (part, k)
    for v in [*cons.values(), *result["metrics"]["attr"].values()]:
        assert 0 <= v["all"] <= v["mean"] <= 1 and set(v) == {"color", "shape", "size", "position", "mean", "all"}
    prov = result["provenance"]["consistency"]
    assert prov["num_generated"] == 32 and prov["conditioned"] and "audio attribute classifier" in prov["features"]
    assert prov["inverse_mel"] == {"solver": "kl", "iterations": 100}
    assert "consistency captioned" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--data", str(tiny_shapes / "test"), "--metrics", "psnr"]) == 2
    assert "do not apply to a joint generator" in capsys.readouterr().err
    from gan.joint.sampling import JointSampler

    sampler = JointSampler.from_pretrained(run)  # evaluation batches keep no autograd graph (it held ~5 MB a pair)
    images, mels = sampler.run(torch.randn(2, sampler.generator.config.z_dim), sampler.condition(["a red circle"] * 2, 2))
    assert images.grad_fn is None and mels.grad_fn is None and not images.requires_grad


def test_unprompted_sampling_draws_training_captions_from_the_export(joint_run, tmp_path, capsys):
    from gan.errors import GanError
    from gan.joint.sampling import JointSampler

    trainer, run, _ = joint_run
    sampler = JointSampler.from_pretrained(run)
    assert sampler.captions == trainer.dataset.texts  # every training row's caption (tiny data: fewer than the cap)
    images, mels, labels = sampler.generate(None, 5, seed=3)
    assert labels == sampler.draw_captions(5, seed=3) and set(labels) <= set(trainer.dataset.texts)
    # pair j is what --prompt <its caption> gives for pair j of the same seed: same noise, same caption
    # (up to float rounding: encoded alone, the caption's tokens are padded to another length)
    for j in (0, 4):
        im, mel, _ = sampler.generate([labels[j]], 5, seed=3)
        assert torch.allclose(im[j], images[j], atol=1e-5) and torch.allclose(mel[j], mels[j], atol=1e-5)
    none_images, _, none_labels = sampler.generate(None, 5, seed=3, unprompted="none")
    assert none_labels == [""] * 5 and not torch.equal(none_images, images)
    with pytest.raises(GanError, match="--unprompted must be one of captions, none"):
        sampler.generate(None, 2, unprompted="zero")
    out = tmp_path / "drawn"
    assert main(["sample", "--checkpoint", str(run), "--num", "5", "--seed", "3", "--out", str(out),
                 "--griffin-lim-iters", "4"]) == 0
    page = (out / "index.html").read_text()
    assert all(label.replace("'", "&#x27;") in page for label in labels)
    # an export from before the caption bank: the no-caption condition, said so; asking for captions is an error
    old = tmp_path / "old_export"
    shutil.copytree(run / "generator", old)
    (old / "captions.json").unlink()
    assert main(["sample", "--checkpoint", str(old), "--num", "2", "--out", str(tmp_path / "o"),
                 "--griffin-lim-iters", "4"]) == 0
    assert "no captions.json" in capsys.readouterr().out
    with pytest.raises(GanError, match="has no captions.json"):
        JointSampler.from_pretrained(old).draw_captions(2, 0)


def test_caption_bank_round_trip_cap_and_errors(tmp_path):
    from gan.errors import GanError
    from gan.joint.sampling import read_caption_bank, write_caption_bank

    texts = [f"caption {i % 7}" for i in range(50)]
    write_caption_bank(tmp_path, texts, seed=1, limit=20)
    kept = read_caption_bank(tmp_path)
    assert len(kept) == 20 and set(kept) <= set(texts)
    write_caption_bank(tmp_path, texts, seed=1, limit=20)
    assert read_caption_bank(tmp_path) == kept  # the seeded draw is reproducible
    write_caption_bank(tmp_path, texts[:5])
    assert read_caption_bank(tmp_path) == texts[:5]  # under the cap: every row, in order, repeats kept
    assert read_caption_bank(tmp_path / "nowhere") is None
    for bad, says in [("{", "unreadable caption bank"), ('{"captions": []}', "non-empty list"),
                      ('{"captions": ["ok", ""]}', "non-empty strings"), ('{"texts": ["a"]}', "unreadable")]:
        (tmp_path / "captions.json").write_text(bad)
        with pytest.raises(GanError, match=says) as err:
            read_caption_bank(tmp_path)
        assert "captions.json" in str(err.value)


def test_sound_from_picture_learns_the_real_pairs_reading(tmp_path, make_tiny_config):
    cfg = load_config(make_tiny_config(tmp_path), [*JOINT, "train.max_steps=60", "train.run_name=sonify",
                                                   "train.batch_size=16", "loss.diffaugment=", "joint.audio_source=image",
                                                   "joint.sonify_weight=10"])
    run = Trainer(cfg).train()
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    sonify = [s["loss/g_sonify"] / 10 for s in stats]  # L1 between G's sound of a real picture and its real sound
    first, last = sum(sonify[:5]) / 5, sum(sonify[-10:]) / 10
    assert last < 0.8 * first, (first, last)  # measured 0.79 -> 0.45
    from gan.joint.models import JointGenerator

    G = JointGenerator.from_pretrained(run / "generator")
    assert G.config.audio_source == "image" and G.image_reader is not None
