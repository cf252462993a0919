import pytest

from gan.errors import GanError
from gan.training import checkpoint as ckpt


def test_list_resolve_and_prune(tmp_path):
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-40.tmp").mkdir()  # an interrupted save is not a checkpoint
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 10, 30]
    assert ckpt.resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-30"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 30]


def test_resume_errors(tmp_path):
    with pytest.raises(GanError, match="no checkpoint"):
        ckpt.resolve_resume(tmp_path, "latest")
    assert ckpt.resolve_resume(tmp_path, "auto") is None
    with pytest.raises(GanError, match="not a checkpoint folder"):
        ckpt.resolve_resume(tmp_path, str(tmp_path))


def test_replace_dir_keeps_old_until_new_is_in_place(tmp_path):
    final = tmp_path / "generator"
    final.mkdir()
    (final / "w").write_text("old")
    tmp = ckpt.temp_dir_for(final)
    tmp.mkdir()
    (tmp / "w").write_text("new")
    ckpt.replace_dir(tmp, final)
    assert (final / "w").read_text() == "new"
    assert not tmp.exists() and not final.with_name("generator.old").exists()
