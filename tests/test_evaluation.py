"""`gan eval` on a tiny trained run: the numbers are well-formed and traceable; bad input is clear."""

import json

import pytest

from gan.config import load_config
from gan.errors import GanError
from gan.evaluation import evaluate
from gan.training.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_shapes):
    from conftest import TINY_CONFIG

    folder = tmp_path_factory.mktemp("evalrun")
    path = folder / "tiny.toml"
    path.write_text(TINY_CONFIG.format(root=tiny_shapes.as_posix(), runs=(folder / "runs").as_posix()))
    cfg = load_config(path, ["train.sample_every=0", "train.max_steps=2", "data.resolution=32"])
    return Trainer(cfg).train()


def test_attr_and_diversity_with_provenance(tiny_run, tiny_shapes):
    result, path = evaluate(str(tiny_run), str(tiny_shapes / "test"), ["attr", "diversity"], num=10)
    assert path == tiny_run / "eval-attr-diversity.json"
    assert json.loads(path.read_text()) == result
    attr = result["metrics"]["attr"]
    for group in ("all_wordings", "seen", "heldout"):
        assert set(attr[group]) >= {"color", "shape", "size", "position", "mean", "all"}
        assert all(0.0 <= attr[group][k] <= 1.0 for k in ("color", "mean", "all"))
    assert attr["seen"]["count"] + attr["heldout"]["count"] == 10
    mean = sum(attr["all_wordings"][k] for k in ("color", "shape", "size", "position")) / 4
    assert attr["all_wordings"]["mean"] == pytest.approx(mean)
    prov = result["provenance"]
    assert prov["step"] == 2 and prov["num_generated"] == 10 and prov["seed"] == 0
    assert "torch" in prov["versions"]
    assert set(result["metrics"]["diversity"]["std_ratio_mean"]) == {"background", "center_x", "center_y", "side"}
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == result


def test_bad_requests_are_clear(tiny_run, tiny_shapes, tmp_path):
    with pytest.raises(GanError, match="unknown.*fid2.*available: attr, diversity"):
        evaluate(str(tiny_run), str(tiny_shapes / "test"), ["fid2"])
    with pytest.raises(GanError, match="expected a split folder"):
        evaluate(str(tiny_run), str(tmp_path), ["attr"])
    split = tmp_path / "plain"
    split.mkdir()
    (split / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a red circle"}\n')
    with pytest.raises(GanError, match="needs an 'attributes' object"):
        evaluate(str(tiny_run), str(split), ["attr"])
