"""The video-repair task runs in the same trainer: trains, previews, exports and resumes exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from gan.config import load_config
from gan.errors import GanError
from gan.training.repair_steps import damage_masks, repair_clip
from gan.training.trainer import Trainer

CONFIG = """
name = "repair"
task = "video-repair"
[data]
root = "{root}"
resolution = 16
[model]
g_channels = 4
d_channels = 4
[repair]
frames = 4
[train]
batch_size = 2
max_steps = 4
log_every = 1
sample_every = 2
checkpoint_every = 2
output_dir = "{runs}"
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from gan.data.moving_shapes import write_moving_shapes

    out = tmp_path_factory.mktemp("clips") / "moving"
    write_moving_shapes(out, 4, 2, frames=4, size=16, seed=0, progress=False)
    return out


@pytest.fixture
def repair_config(tmp_path, clips):
    path = tmp_path / "repair.toml"
    path.write_text(CONFIG.format(root=clips.as_posix(), runs=(tmp_path / "runs").as_posix()))
    return path


def test_repair_trains_previews_exports_and_resumes_exactly(repair_config):
    straight = Trainer(load_config(repair_config, ["train.run_name=straight"])).train()
    stats = [json.loads(x) for x in (straight / "stats.jsonl").read_text().splitlines()]
    assert all(k in stats[-1] for k in ("loss/d", "loss/hole_l1", "loss/valid_l1", "loss/adv"))
    assert (straight / "samples" / "step-0000002.gif").is_file()
    spec = json.loads((straight / "generator" / "condition.json").read_text())
    assert spec["task"] == "video-repair" and spec["frames"] == 4
    Trainer(load_config(repair_config, ["train.run_name=halves", "train.max_steps=2"])).train()
    halves = Trainer(load_config(repair_config, ["train.run_name=halves"]), resume="latest").train()
    a, b = (load_file(d / "checkpoint-4" / "model.safetensors") for d in (straight, halves))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_masks_are_reproducible_and_windows_cover_long_clips():
    kw = dict(seed=0, step=3, rank=0, micro=0)
    m1, m2 = damage_masks(["strokes", "boxes"], 2, 4, 16, **kw), damage_masks(["strokes", "boxes"], 2, 4, 16, **kw)
    assert m1.shape == (2, 4, 1, 16, 16) and torch.equal(m1, m2)
    assert not torch.equal(m1, damage_masks(["strokes", "boxes"], 2, 4, 16, **{**kw, "step": 4}))
    from gan.repair.models import RepairGenerator

    G = RepairGenerator(base_channels=4)
    frames = torch.rand(11, 3, 18, 14) * 2 - 1  # longer than the window, sides not divisible by 4
    mask = torch.zeros(11, 18, 14, dtype=torch.bool)
    mask[:, 4:9, 3:8] = True
    out = repair_clip(G, frames, mask, window=4, device="cpu")
    assert out.shape == frames.shape
    assert torch.allclose(out[~mask[:, None].expand_as(frames)], frames[~mask[:, None].expand_as(frames)], atol=1e-6)


def test_repair_config_errors(repair_config):
    with pytest.raises(GanError, match="repair.damage"):
        load_config(repair_config, ['repair.damage=["fire"]'])
    with pytest.raises(GanError, match="repair.vgg_weights"):
        load_config(repair_config, ["repair.perceptual_weight=0.1"])


def test_gan_repair_command(repair_config, clips, tmp_path):
    from gan.cli import main
    from gan.data.clips import read_clip
    from gan.data.damage import make_mask, save_masks

    run = Trainer(load_config(repair_config, ["train.run_name=cli", "train.max_steps=1", "train.sample_every=0"])).train()
    clip = clips / "test" / json.loads((clips / "test" / "metadata.jsonl").read_text().splitlines()[0])["clip"]
    out = tmp_path / "fixed"
    assert main(["repair", "--checkpoint", str(run), "--input", str(clip), "--damage", "boxes", "--seed", "3",
                 "--out", str(out)]) == 0
    original, names = read_clip(clip)
    repaired, rnames = read_clip(out)
    assert rnames == names and repaired.shape == original.shape and (out / "preview.gif").is_file()
    holes = make_mask("boxes", len(names), original.shape[-2:], seed=3)
    keep = ~holes[:, None].expand_as(original)
    assert torch.equal(repaired[keep], original[keep])  # known pixels pass through exactly
    masks = tmp_path / "masks"
    save_masks(holes, masks, names)
    assert main(["repair", "--checkpoint", str(run), "--input", str(clip), "--mask", str(masks),
                 "--out", str(tmp_path / "m")]) == 0
    assert main(["repair", "--checkpoint", str(run), "--input", str(clip), "--out", str(tmp_path / "x")]) == 2
    assert main(["repair", "--checkpoint", str(run), "--input", str(tmp_path / "nope"), "--damage", "boxes",
                 "--out", str(tmp_path / "y")]) == 2


def test_gan_eval_scores_repair_against_the_baselines(repair_config, clips, tmp_path):
    from gan.cli import main

    run = Trainer(load_config(repair_config, ["train.run_name=ev", "train.max_steps=1", "train.sample_every=0"])).train()
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--data", str(clips / "test"),
                 "--metrics", "psnr,ssim,hole_psnr,temporal,vfid", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["metrics"]) == {"psnr", "ssim", "hole_psnr", "temporal", "vfid"}
    assert "offline analogue" in result["provenance"]["vfid"]["features"]
    assert all(v["vfid"] >= 0 for v in result["baselines"].values())
    assert set(result["baselines"]) == {"telea", "nearest_visible"}
    assert result["provenance"]["psnr"]["clips"] == 2
    # known pixels are exact for every method, so whole-frame PSNR beats hole PSNR
    for scores in (result["metrics"], *result["baselines"].values()):
        assert scores["psnr"] > scores["hole_psnr"] and scores["temporal"] >= 0
    assert main(["eval", "--checkpoint", str(run), "--data", str(clips / "test"), "--metrics", "fid"]) == 2


def test_conditioned_repair_with_caption_and_audio(repair_config, clips, tmp_path):
    from gan.cli import main

    cond = ["repair.conditioned=true", 'condition.modalities=["text", "audio"]', "text.encoder=learned",
            "condition.encoder_width=4", "condition.encoder_dim=8", "condition.fusion_dim=8",
            "condition.fusion_token_dim=8"]
    trainer = Trainer(load_config(repair_config, ["train.run_name=cond", "train.max_steps=2", *cond]))
    before = {k: v.clone() for k, v in trainer.conditioner.state_dict().items()}
    run = trainer.train()
    after = trainer.conditioner.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)  # the condition learns with G
    assert trainer.G.config.cond_dim == 8
    assert (run / "samples" / "step-0000002.gif").is_file()
    row = json.loads((clips / "test" / "metadata.jsonl").read_text().splitlines()[0])
    clip, wav = clips / "test" / row["clip"], clips / "test" / row["audio_file"]
    args = ["repair", "--checkpoint", str(run), "--input", str(clip), "--damage", "boxes"]
    assert main([*args, "--prompt", row["text"], "--audio", str(wav), "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--prompt", row["text"], "--out", str(tmp_path / "b")]) == 0  # audio missing: its null
    assert main([*args, "--out", str(tmp_path / "c")]) == 2  # no condition at all
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--data", str(clips / "test"), "--metrics", "hole_psnr",
                 "--out", str(out)]) == 0
    assert "hole_psnr" in json.loads(out.read_text())["metrics"]


def test_repair_skip_mode_trains_on_the_good_clips_and_files_the_bad_ones(clips, tmp_path):
    import shutil

    from gan.data.metadata import read_metadata

    root = tmp_path / "data"
    shutil.copytree(clips, root)
    split = root / "train"
    rows = read_metadata(split)
    shutil.rmtree(split / rows[1]["clip"])  # line 2: the clip folder is gone
    (split / rows[2]["audio_file"]).write_bytes(b"RIFF")  # line 3: a truncated WAV (audio conditioning reads it)
    path = tmp_path / "repair.toml"
    path.write_text(CONFIG.format(root=root.as_posix(), runs=(tmp_path / "runs").as_posix()))
    cond = ["repair.conditioned=true", 'condition.modalities=["text", "audio"]', "text.encoder=learned",
            "condition.encoder_width=4", "condition.encoder_dim=8", "condition.fusion_dim=8",
            "condition.fusion_token_dim=8", "train.max_steps=2", "repair.temporal_weight=1.0", "repair.propagate=true"]
    with pytest.raises(GanError, match=r"(?s)2 of 4 rows .*metadata.jsonl:2: clip not found"):
        Trainer(load_config(path, cond))
    trainer = Trainer(load_config(path, [*cond, "data.on_bad_sample=skip"]))
    assert trainer.dataset.lines == [1, 4] and trainer.dataset.texts == [rows[0]["text"], rows[3]["text"]]
    run = trainer.train()
    report = (run / "bad_samples.txt").read_text().splitlines()
    assert report[0].startswith("# skipped 2 of 4 rows") and len(report) == 3
    assert ":2: clip not found" in report[1] and ":3: " in report[2] and rows[2]["audio_file"] in report[2]
    assert (run / "checkpoint-2").is_dir() and trainer.G.config.propagate
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert all(s["loss/temporal"] > 0 for s in stats if "loss/g" in s)
