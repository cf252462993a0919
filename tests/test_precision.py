import torch

from gan import precision
from gan.training.trainer import resolve_mixed_precision


def test_cpu_bf16_check_agrees_with_onednn():
    precision.cpu_bf16_is_fast.cache_clear()
    assert precision.cpu_bf16_is_fast() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_auto_picks_bf16_only_where_the_cpu_runs_it_fast(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for fast, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(precision, "cpu_bf16_is_fast", lambda fast=fast: fast)
        assert precision.auto_mixed_precision() == expected
        assert resolve_mixed_precision("auto") == expected
        with precision.cpu_autocast():
            y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
        assert y.dtype == (torch.bfloat16 if fast else torch.float32)
    for explicit in ("no", "bf16", "fp16"):  # an explicit setting is never second-guessed
        assert resolve_mixed_precision(explicit) == explicit
