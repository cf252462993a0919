"""`gan eval` on a tiny trained run and on image folders: numbers traceable, caches reused, bad input clear."""

import json

import pytest
import torch
from PIL import Image

from gan.config import load_config
from gan.errors import GanError
from gan.evaluation import evaluate
from gan.metrics.protocol import EvalProtocol, load_protocol
from gan.training.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_shapes):
    from conftest import TINY_CONFIG

    folder = tmp_path_factory.mktemp("evalrun")
    path = folder / "tiny.toml"
    path.write_text(TINY_CONFIG.format(root=tiny_shapes.as_posix(), runs=(folder / "runs").as_posix()))
    cfg = load_config(path, ["train.sample_every=0", "train.max_steps=2", "data.resolution=32"])
    return Trainer(cfg).train()


def _protocol(tiny_shapes, **kw) -> EvalProtocol:
    base = dict(data=str(tiny_shapes / "test"), num=24, kid_subset_size=8, kid_subsets=10, is_splits=2,
                allow_rank_deficient=True)
    return load_protocol(None, {**base, **kw})


def test_attr_and_diversity_with_provenance(tiny_run, tiny_shapes):
    result, path = evaluate(_protocol(tiny_shapes, metrics=["attr", "diversity"], num=10), checkpoint=str(tiny_run))
    assert path == tiny_run / "eval-attr-diversity.json"
    assert json.loads(path.read_text()) == result
    attr = result["metrics"]["attr"]
    for group in ("all_wordings", "seen", "heldout"):
        assert set(attr[group]) >= {"color", "shape", "size", "position", "mean", "all"}
        assert all(0.0 <= attr[group][k] <= 1.0 for k in ("color", "mean", "all"))
    assert attr["seen"]["count"] + attr["heldout"]["count"] == 10
    mean = sum(attr["all_wordings"][k] for k in ("color", "shape", "size", "position")) / 4
    assert attr["all_wordings"]["mean"] == pytest.approx(mean)
    prov = result["provenance"]["attr"]
    assert prov["step"] == 2 and prov["num_generated"] == 10 and prov["seed"] == 0
    assert "torch" in result["run"]["versions"] and "torchmetrics" in result["run"]["versions"]
    assert set(result["metrics"]["diversity"]["std_ratio_mean"]) == {"background", "center_x", "center_y", "side"}
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == result


def test_feature_metrics_on_the_dataset_backbone(tiny_run, tiny_shapes):
    p = _protocol(tiny_shapes, metrics=["fid", "kid", "is", "pr", "attr"])
    result, _ = evaluate(p, checkpoint=str(tiny_run), progress=False)
    m = result["metrics"]
    assert m["fid"] > 0 and m["kid_std"] >= 0 and 1.0 <= m["is"] <= 240
    assert all(0.0 <= m[k] <= 1.0 for k in ("precision", "recall", "coverage"))
    fid = result["provenance"]["fid"]
    assert fid["name"] == "fid24_test_dataset" and fid["num_generated"] == 24 and fid["num_real"] == 16
    assert fid["backbone"]["name"] == "dataset" and len(fid["weights_sha256"]) == 64
    assert result["provenance"]["kid"]["settings"] == {"subset_size": 8, "subsets": 10}
    # the attribute images are the very images the features came from: one generation pass
    assert result["metrics"]["attr"]["seen"]["count"] + result["metrics"]["attr"]["heldout"]["count"] == 24
    # the reference features were cached by the first call and reused by the second, same numbers
    again, _ = evaluate(p, checkpoint=str(tiny_run), progress=False)
    assert again["metrics"]["fid"] == pytest.approx(m["fid"], rel=1e-9)
    assert again["provenance"]["fid"]["reference_cache"] == fid["reference_cache"]
    with pytest.raises(GanError, match="at least 129"):
        evaluate(_protocol(tiny_shapes, metrics=["fid"], allow_rank_deficient=False, backbone="dataset",
                           num_real=0), checkpoint=str(tiny_run), progress=False)


def _write_folder(folder, images: torch.Tensor):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


class MeanColor(torch.nn.Module):
    """A registered user backbone: per-channel means and a 2x2 pooled image as features."""

    name, feature_dim, num_classes, weights_sha256, resize = "meancolor", 15, None, "none", "none"

    def forward(self, images):
        x = images.float() / 255
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return {"features": torch.cat([x.mean((2, 3)), pooled], 1)}

    def provenance(self):
        return {"name": self.name, "feature_dim": 15}


@pytest.fixture(autouse=True, scope="module")
def _registered():
    from gan.metrics.backbones import register_backbone

    register_backbone("meancolor", lambda **kw: MeanColor())


def test_two_folders_with_a_registered_backbone(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 16, 16), generator=g, dtype=torch.uint8)
    _write_folder(tmp_path / "real", real)
    _write_folder(tmp_path / "same", real)
    _write_folder(tmp_path / "dark", real // 4)
    p = load_protocol(None, {"metrics": ["fid", "kid", "pr"], "backbone": "meancolor", "kid_subset_size": 20})
    same, path = evaluate(p, fake=str(tmp_path / "same"), real=str(tmp_path / "real"),
                          out=str(tmp_path / "same.json"), progress=False)
    dark, _ = evaluate(p, fake=str(tmp_path / "dark"), real=str(tmp_path / "real"),
                       out=str(tmp_path / "dark.json"), progress=False)
    assert same["metrics"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["metrics"]["precision"] == 1.0 and same["metrics"]["recall"] == 1.0
    assert dark["metrics"]["fid"] > 0.1 and dark["metrics"]["kid"] > same["metrics"]["kid"]
    assert dark["metrics"]["precision"] == 0.0
    assert json.loads(path.read_text())["provenance"]["fid"]["num_real"] == 40


def test_protocol_files_and_bad_requests(tiny_run, tiny_shapes, tmp_path):
    proto = tmp_path / "p.toml"
    proto.write_text(f'metrics = ["attr"]\ndata = "{(tiny_shapes / "test").as_posix()}"\nnum = 4\n')
    p = load_protocol(proto, {"num": 6})
    assert p.name == "p" and p.num == 6 and p.metrics == ["attr"]
    proto.write_text('metrics = ["attr"]\nnumm = 4\n')
    with pytest.raises(GanError, match="unknown config key 'numm'.*num_real"):
        load_protocol(proto)
    with pytest.raises(GanError, match="unknown.*fid2.*available: fid, kid, is, pr, attr, diversity"):
        load_protocol(None, {"metrics": ["fid2"]})
    with pytest.raises(GanError, match="exactly one generated source"):
        evaluate(_protocol(tiny_shapes, metrics=["attr"]))
    with pytest.raises(GanError, match="needs a split folder with metadata.jsonl"):
        evaluate(_protocol(tiny_shapes, metrics=["attr"], data=str(tmp_path)), checkpoint=str(tiny_run))
    split = tmp_path / "plain"
    split.mkdir()
    (split / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a red circle"}\n')
    with pytest.raises(GanError, match="needs an 'attributes' object"):
        evaluate(_protocol(tiny_shapes, metrics=["attr"], data=str(split)), checkpoint=str(tiny_run))
    with pytest.raises(GanError, match="'is' needs class logits"):
        evaluate(load_protocol(None, {"metrics": ["is"], "backbone": "meancolor"}), fake=str(split),
                 real=str(split))


def test_two_processes_count_exactly_n_samples(tiny_run, tiny_shapes, tmp_path, bin_dir):
    """Two real CPU ranks (gloo) give the single-process numbers, from exactly N samples each side."""
    import os
    import subprocess

    args = ["--checkpoint", str(tiny_run), "--data", str(tiny_shapes / "test"), "--metrics", "fid,kid,pr,attr",
            "--num", "21", "--kid-subset-size", "8", "--kid-subsets", "10", "--allow-rank-deficient"]
    single, _ = evaluate(load_protocol(None, {"metrics": ["fid", "kid", "pr", "attr"], "num": 21,
                                              "data": str(tiny_shapes / "test"), "kid_subset_size": 8,
                                              "kid_subsets": 10, "allow_rank_deficient": True}),
                         checkpoint=str(tiny_run), out=str(tmp_path / "one.json"), progress=False)
    # `--cpu --num_processes 2` would silently start ONE process; this starts two.
    cmd = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "gan", "eval", *args,
           "--out", str(tmp_path / "two.json")]
    proc = subprocess.run(cmd, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["run"]["processes"] == 2
    assert two["provenance"]["fid"]["num_generated"] == 21 and two["provenance"]["fid"]["num_real"] == 16
    for k in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert two["metrics"][k] == pytest.approx(single["metrics"][k], rel=1e-5, abs=1e-7), k
    assert two["metrics"]["attr"] == single["metrics"]["attr"]


def test_the_inception_path_end_to_end_with_random_weights(tmp_path):
    """The whole `gan eval` path on the Inception backbone (random weights: numbers meaningless, path real)."""
    from gan.cli import main
    from gan.metrics.backbones import write_random_inception_weights

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 299-px network on a shared 2-core box: one thread runs faster
    try:
        weights = write_random_inception_weights(tmp_path / "random.safetensors")
        g = torch.Generator().manual_seed(1)
        _write_folder(tmp_path / "real", torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8))
        _write_folder(tmp_path / "fake", torch.randint(0, 200, (12, 3, 32, 32), generator=g, dtype=torch.uint8))
        out = tmp_path / "inc.json"
        assert main(["eval", "--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--backbone",
                     "inception", "--inception-weights", weights, "--metrics", "fid,kid,is,pr", "--kid-subset-size",
                     "6", "--allow-rank-deficient", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    prov = result["provenance"]["fid"]
    assert prov["name"] == "fid12_real_inception" and prov["resize"] == "tf-bilinear"
    assert prov["backbone"]["feature_dim"] == 2048 and prov["settings"] == {"allow_rank_deficient": True}
    import hashlib

    assert prov["weights_sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert result["metrics"]["fid"] > 0 and result["metrics"]["is"] >= 1.0
    assert main(["eval", "--fake", str(tmp_path / "fake"), "--real", str(tmp_path / "real"), "--backbone",
                 "inception", "--inception-weights", weights, "--metrics", "fid"]) == 2  # 12 < 2049 samples
