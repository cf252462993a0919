import pytest
import torch
import torch.distributed as dist
from torch import nn

from gan.models import EMA


def small_model(seed=0):
    torch.manual_seed(seed)
    # BatchNorm only to get buffers (float running stats and an integer counter).
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def set_params(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_copy_is_independent_frozen_and_in_eval_mode():
    model = small_model()
    ema = EMA(model)
    assert ema.model is not model and not ema.model.training
    assert all(not p.requires_grad for p in ema.model.parameters())
    set_params(model, 5.0)
    assert all((p != 5.0).any() for p in ema.model.parameters())


def test_update_matches_closed_form_without_warmup():
    model = small_model()
    set_params(model, 1.0)
    ema = EMA(model, decay=0.9, warmup=False)
    set_params(model, 3.0)
    ema.update(model, step=0)
    for p in ema.model.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.9 * 1.0 + 0.1 * 3.0))
    ema.update(model, step=1)
    for p in ema.model.parameters():  # 0.9 * 1.2 + 0.1 * 3
        assert torch.allclose(p, torch.full_like(p, 1.38))


def test_warmup_schedule_and_its_use_in_update():
    ema = EMA(small_model(), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10) == pytest.approx(11 / 20)
    assert ema.decay_at(90) == pytest.approx(91 / 100)
    assert ema.decay_at(10**6) == pytest.approx(0.999)
    assert EMA(small_model(), decay=0.5, warmup=True).decay_at(100) == pytest.approx(0.5)
    assert EMA(small_model(), decay=0.999, warmup=False).decay_at(0) == pytest.approx(0.999)

    model = small_model()
    set_params(model, 0.0)
    ema = EMA(model, decay=0.999)
    set_params(model, 1.0)
    ema.update(model, step=0)  # d = 0.1
    for p in ema.model.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.9))


def test_buffers_are_copied_not_averaged():
    model = small_model()
    ema = EMA(model, decay=0.99, warmup=False)
    model.train()(torch.randn(8, 3))  # moves running stats and the batch counter
    ema.update(model, step=0)
    bn_live, bn_ema = model[1], ema.model[1]
    assert torch.equal(bn_ema.running_mean, bn_live.running_mean)
    assert torch.equal(bn_ema.running_var, bn_live.running_var)
    assert bn_ema.num_batches_tracked.item() == 1


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    model = small_model(0)
    ema = EMA(model, decay=0.95)
    for step in range(3):
        set_params(model, float(step))
        ema.update(model, step)
    state = ema.state_dict()
    torch.save(state, tmp_path / "ema.pkl")  # what accelerate's register_for_checkpointing does

    ema.update(model, 3)  # must not alter the state already taken
    assert not all(torch.equal(a, b) for a, b in zip(ema.model.state_dict().values(), state["model"].values()))

    other = EMA(small_model(1), decay=0.5, warmup=False)
    other.load_state_dict(torch.load(tmp_path / "ema.pkl", weights_only=False))
    assert (other.decay, other.warmup, other.step) == (0.95, True, 2)
    for a, b in zip(other.model.state_dict().values(), state["model"].values()):
        assert torch.equal(a, b)
    # Resumed and uninterrupted copies evolve identically.
    ref = EMA(small_model(1))
    ref.load_state_dict(state)
    other.update(model, 3)
    ref.update(model, 3)
    for a, b in zip(other.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)


def test_copy_to_writes_averaged_weights_into_a_model():
    model = small_model()
    set_params(model, 2.0)
    ema = EMA(model, decay=0.5, warmup=False)
    set_params(model, 4.0)
    ema.update(model, 0)
    target = small_model(7)
    ema.copy_to(target)
    for p in target.parameters():
        assert torch.allclose(p, torch.full_like(p, 3.0))


def test_architecture_mismatch_raises():
    ema = EMA(small_model())
    with pytest.raises(ValueError, match="same architecture"):
        ema.update(nn.Linear(3, 4), 0)


def test_unwraps_data_parallel_and_ddp(tmp_path):
    model = small_model()
    set_params(model, 1.0)
    ema = EMA(nn.DataParallel(model), decay=0.5, warmup=False)
    assert isinstance(ema.model, nn.Sequential)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        set_params(model, 3.0)
        ema.update(ddp, 0)
        for p in ema.model.parameters():
            assert torch.allclose(p, torch.full_like(p, 2.0))
        assert isinstance(EMA(ddp).model, nn.Sequential)
    finally:
        dist.destroy_process_group()


def test_bad_decay_raises():
    with pytest.raises(ValueError, match="decay"):
        EMA(small_model(), decay=1.5)
