import tomllib

import pytest

from gan.config import Config, load_config, to_toml
from gan.errors import GanError


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_then_toml_then_set(tmp_path):
    path = write(tmp_path, 'name = "x"\n[train]\nmax_steps = 7\nbatch_size = 4\n[loss]\ngp_weight = 3\n')
    cfg = load_config(path, ["train.max_steps=9", "text.encoder=learned", "model.attention_resolutions=[8, 16]"])
    assert cfg.name == "x"
    assert cfg.train.max_steps == 9  # --set wins over the file
    assert cfg.train.batch_size == 4  # the file wins over the default
    assert cfg.train.seed == Config().train.seed  # untouched default
    assert cfg.loss.gp_weight == 3.0 and isinstance(cfg.loss.gp_weight, float)  # int accepted for float
    assert cfg.text.encoder == "learned"  # a bare word is a string
    assert cfg.model.attention_resolutions == [8, 16]


def test_unknown_key_lists_valid_ones(tmp_path):
    path = write(tmp_path, "[train]\nmax_step = 7\n")
    with pytest.raises(GanError) as e:
        load_config(path)
    msg = str(e.value)
    assert "train.max_step" in msg and "train.max_steps" in msg and str(path) in msg


def test_unknown_section_and_set_key():
    with pytest.raises(GanError, match="unknown config key 'nope'"):
        load_config(None, ["nope.x=1"])
    with pytest.raises(GanError, match="unknown config key 'data.reslution'.*data.resolution"):
        load_config(None, ["data.reslution=64"])


def test_wrong_types_are_errors():
    with pytest.raises(GanError, match="train.max_steps.*integer"):
        load_config(None, ["train.max_steps=lots"])
    with pytest.raises(GanError, match="train.channels_last.*true or false"):
        load_config(None, ["train.channels_last=1"])
    with pytest.raises(GanError, match="expected KEY=VALUE"):
        load_config(None, ["train.max_steps"])
    with pytest.raises(GanError, match="'train' is a section"):
        load_config(None, ["train=3"])


def test_cross_field_validation():
    with pytest.raises(GanError, match="data.resolution.*power of two"):
        load_config(None, ["data.resolution=48"])
    with pytest.raises(GanError, match="loss.kind"):
        load_config(None, ["loss.kind=wasserstein"])
    for key in ("train.batch_size", "train.checkpoint_every", "train.log_every"):  # 0 would divide by zero
        with pytest.raises(GanError, match=f"{key}.*a positive integer"):
            load_config(None, [f"{key}=0"])
    for w in ("1.0", "-0.1"):  # at 1 D's fake term (weighted 1 - w) vanishes
        with pytest.raises(GanError, match=r"loss.mismatch_weight.*\[0, 1\)"):
            load_config(None, [f"loss.mismatch_weight={w}"])
    with pytest.raises(GanError, match="model.upsample.*'nearest' or 'bilinear', got 'cubic'"):
        load_config(None, ["model.upsample=cubic"])
    with pytest.raises(GanError, match="model.upsample.*video-repair"):
        load_config(None, ["task=video-repair", "model.upsample=bilinear"])
    with pytest.raises(GanError, match="model.cond_norm.*video-repair"):
        load_config(None, ["task=video-repair", "model.cond_norm=true"])
    for key in ("data.attribute_groups", "model.mbstd_group"):
        for n in ("1", "3", "-2"):  # batch 64: 3 does not divide it, 1 is no group
            with pytest.raises(GanError, match=rf"config key '{key}': expected 0 \(off\) or a group size >= 2 dividing "
                                               rf"train.batch_size \(64\); got {n}"):
                load_config(None, [f"{key}={n}"])
    with pytest.raises(GanError, match=r"'data.attribute_groups': expected 0 for task 'joint'"):
        load_config(None, ["task=joint", "data.attribute_groups=4"])
    with pytest.raises(GanError, match=r"'model.mbstd_group': expected 0 for task 'video-repair'"):
        load_config(None, ["task=video-repair", "model.mbstd_group=4"])
    assert load_config(None, ["task=joint", "model.mbstd_group=4"]).model.mbstd_group == 4  # over random rows
    for key in ("model.mbstd_spatial", "loss.diffaugment_per_group"):
        with pytest.raises(GanError, match=rf"'{key}': expected false for the joint task"):
            load_config(None, ["task=joint", "model.mbstd_group=4", f"{key}=true"])
    assert load_config(None, ["data.attribute_groups=4", "model.mbstd_group=4"]).model.mbstd_group == 4
    for sets in (["model.pack=2"], ["data.attribute_groups=4", "model.pack=3"], ["data.attribute_groups=4", "model.pack=0"]):
        with pytest.raises(GanError, match=r"'model.pack': expected 1 \(off\) or a size >= 2 dividing data.attribute_groups"):
            load_config(None, sets)
    with pytest.raises(GanError, match="'model.pack': expected 1 with loss.gp = 'ma_gp' or model.mbstd_group"):
        load_config(None, ["data.attribute_groups=4", "model.pack=2", "loss.gp=ma_gp"])
    assert load_config(None, ["data.attribute_groups=4", "model.pack=2"]).model.pack == 2
    for key in ("model.mbstd_spatial", "loss.diffaugment_per_group"):
        with pytest.raises(GanError, match=rf"'{key}': expected false unless model.mbstd_group is set"):
            load_config(None, [f"{key}=true"])
    for key in ("pair_weight", "near_miss_weight", "free_pair_weight"):
        with pytest.raises(GanError, match=f"joint.{key}.*a weight >= 0, got -1"):
            load_config(None, ["task=joint", f"joint.{key}=-1"])
    for share in ("-0.1", "1.5"):
        with pytest.raises(GanError, match=r"joint.blend_share.*a share in \[0, 1\]"):
            load_config(None, ["task=joint", f"joint.blend_share={share}"])
    for p in ("-0.1", "1"):
        with pytest.raises(GanError, match=r"joint.word_dropout.*a probability in \[0, 1\)"):
            load_config(None, ["task=joint", "text.use_tokens=true", f"joint.word_dropout={p}"])
    with pytest.raises(GanError, match="joint.word_dropout.*0 unless G reads the caption's words"):
        load_config(None, ["task=joint", "text.use_tokens=false", "joint.word_dropout=0.2"])
    assert load_config(None, ["task=joint", "text.use_tokens=true", "joint.word_dropout=0.2"]).joint.word_dropout == 0.2
    with pytest.raises(GanError, match="joint.blend_share.*unconditional"):
        load_config(None, ["task=joint", "joint.conditioned=false", "joint.blend_share=0.5"])
    with pytest.raises(GanError, match="joint.head_style.*'w' or 'trunk', got 'both'"):
        load_config(None, ["task=joint", "joint.head_style=both"])
    with pytest.raises(GanError, match="joint.audio_source.*'trunk' or 'image', got 'caption'"):
        load_config(None, ["task=joint", "joint.audio_source=caption"])
    with pytest.raises(GanError, match="joint.sonify_weight.*0 unless joint.audio_source = 'image'.*got 1.0 with audio_source 'trunk'"):
        load_config(None, ["task=joint", "joint.sonify_weight=1"])
    with pytest.raises(GanError, match="joint.free_pair_weight.*unconditional"):
        load_config(None, ["task=joint", "joint.conditioned=false", "joint.free_pair_weight=1"])


def test_malformed_and_missing_file(tmp_path):
    with pytest.raises(GanError, match="malformed TOML"):
        load_config(write(tmp_path, "[train\nmax_steps = 3"))
    with pytest.raises(GanError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = load_config(None, ['train.sample_prompts=["a \\"red\\" disc", "b"]', "optim.g_lr=0.001"])
    again = load_config(write(tmp_path, to_toml(cfg)))
    assert again == cfg
    assert tomllib.loads(to_toml(cfg))["train"]["sample_prompts"][0] == 'a "red" disc'


def test_shipped_configs_load():
    from pathlib import Path
    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.toml")):
        load_config(path)


def test_skip_mode_is_accepted_by_every_task():  # clip skipping itself: tests/data/test_clips.py
    for config in ("configs/repair_moving_shapes.toml", "configs/joint_shapes.toml", "configs/t2i_shapes.toml"):
        assert load_config(config, ["data.on_bad_sample=skip"]).data.on_bad_sample == "skip"
