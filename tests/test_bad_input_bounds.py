"""Every validated bound on both sides of its edge: the last value accepted and the first
one refused, for Config fields, their CLI flags, eval's own flags and the C engine's
limits (issue 13, "found by fuzzing")."""
import math

import numpy as np
import pytest

from codext import _C, cli
from codext.config import (FLOAT_RANGES, INT_MULTIPLES, INT_RANGES, MAX_DECODER_DIM, MAX_EPOCHS,
                           Config)
from codext.model import Model

# Settings that make room for a field's edge (fields bounded by other fields).
ROOM = {"stage1_epochs": dict(epochs=MAX_EPOCHS), "epochs": dict(stage1_epochs=0), "moe_top_k": dict(num_experts=32),
        "lr": dict(min_lr=0.0), "stage2_lr": dict(min_lr=0.0)}


def int_edges():
    """(field, last accepted, first refused) on both sides of every int range."""
    for name, (low, high) in INT_RANGES.items():
        step = INT_MULTIPLES.get(name, 1)
        yield name, low, low - 1
        yield name, high, high + 1
        if step > 1:
            yield name, high, high + step
            yield name, low + step, low + step + 1


def float_edges():
    for name, (low, low_open, high, high_open) in FLOAT_RANGES.items():
        if low_open:
            yield name, math.nextafter(low, math.inf), low
        else:
            yield name, low, math.nextafter(low, -math.inf)
        if high == math.inf:
            yield name, 1.7976931348623157e308, math.inf
        elif high_open:
            yield name, math.nextafter(high, -math.inf), high
        else:
            yield name, high, math.nextafter(high, math.inf)
        yield name, None, math.nan


def _value(name, v):
    return (v, 0.5) if name == "betas" else v


@pytest.mark.parametrize("name, ok, bad", list(int_edges()) + list(float_edges()))
def test_config_field_edges(name, ok, bad):
    base = ROOM.get(name, {})
    if ok is not None:
        assert getattr(Config(**base, **{name: _value(name, ok)}), name) == _value(name, ok)
    with pytest.raises(ValueError, match=rf"Config\.{name}\b"):
        Config(**base, **{name: _value(name, bad)})


def _train_args(*argv):
    return cli.train_config(cli.build_parser().parse_args(["train", *argv]))


def _cli_text(v):
    return repr(float(v)) if isinstance(v, float) else str(v)


@pytest.mark.parametrize("name, ok, bad", [e for e in list(int_edges()) + list(float_edges())
                                           if e[0] != "betas" and e[1] is not None])
def test_cli_flag_edges_name_the_flag(name, ok, bad):
    flag = cli.flag_of(name)
    room = [a for k, v in ROOM.get(name, {}).items() for a in (cli.flag_of(k), _cli_text(v))]
    cfg, _, _ = _train_args(*room, f"{flag}={_cli_text(ok)}")
    assert getattr(cfg, name) == ok
    with pytest.raises(cli.UsageError, match=rf"^{flag} "):
        _train_args(*room, f"{flag}={_cli_text(bad)}")


def test_cli_betas_edges():
    assert _train_args("--betas", "0", repr(math.nextafter(1.0, 0)))[0].betas[1] < 1.0
    with pytest.raises(cli.UsageError, match="^--betas "):
        _train_args("--betas", "0.9", "1.0")
    with pytest.raises(cli.UsageError, match="^--betas "):
        _train_args("--betas", "-1.0", "0.9")


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "9223372036854775808"], "--epochs must be in 1..100000, got 9223372036854775808"),
    (["train", "--decoder-dim", "2147483648"], "--decoder-dim must be a multiple of 4 in 4..4096"),
    (["train", "--decoder-dim", "268435456"], "--decoder-dim must be a multiple of 4 in 4..4096"),
    (["train", "--warmup-epochs", "1e300"], "--warmup-epochs must lie in [0, 100000]"),
    (["train", "--seed", "18446744073709551616"], "--seed must be in 0..18446744073709551615"),
    (["train", "--synthetic-test", "1099511627776"], "--synthetic-test must be in 0..10000000"),
    (["eval", "--checkpoint", "nowhere", "--seed", "-1"], "--seed must be in 0..18446744073709551615, got -1"),
    (["eval", "--checkpoint", "nowhere", "--seed", str(2 ** 64)], f"--seed must be in 0..18446744073709551615, got {2 ** 64}"),
    (["eval", "--checkpoint", "nowhere", "--synthetic-test", "0"], "--synthetic-test must be in 1..10000000, got 0"),
    (["eval", "--checkpoint", "nowhere", "--synthetic-test", "10000001"], "--synthetic-test must be in 1..10000000"),
    (["eval", "--checkpoint", "nowhere", "--batch-size", "0"], "--batch-size must be in 1..4096, got 0"),
    (["eval", "--checkpoint", "nowhere", "--batch-size", "4097"], "--batch-size must be in 1..4096, got 4097"),
    (["predict", "--checkpoint", "nowhere", "--input", __file__, "--output", "o", "--num-threads", "257"],
     "--num-threads must be in 1..256, got 257"),
    (["predict", "--checkpoint", "nowhere", "--input", __file__, "--output", "o", "--num-threads", "0"],
     "--num-threads must be in 1..256, got 0"),
])
def test_cli_values_out_of_range_are_one_line_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_eval_flags_last_accepted_values_pass_the_checks(capsys):
    # the last accepted values get past the range checks: the error is about the checkpoint
    for argv in (["--seed", "0"], ["--seed", str(2 ** 64 - 1)], ["--synthetic-test", "1"],
                 ["--synthetic-test", "10000000"], ["--batch-size", "1"], ["--batch-size", "4096"]):
        assert cli.main(["eval", "--checkpoint", "nowhere", *argv]) == 2
        assert "--checkpoint nowhere: no such file" in capsys.readouterr().err


def test_cli_main_turns_an_overflow_into_one_line(monkeypatch, capsys):
    def boom(args):
        raise OverflowError("int too large to convert")
    monkeypatch.setitem(cli.COMMANDS, "eval", boom)
    assert cli.main(["eval", "--checkpoint", "x"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "codext: error: int too large to convert"


# ---- the C engine's own limits (reachable from Python without Config) ---------------------------

def _trainer(model, **kw):
    args = dict(batch_size=2, epochs=2, stage1_epochs=1, scheduler="cosine", warmup_epochs=0.0,
                seed=1)
    args.update(kw)
    return _C.Trainer(model._native, 8, 32, 32, **args)


@pytest.fixture(scope="module")
def small_model():
    return Model("edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32)


def test_c_trainer_warmup_epochs_edges(small_model):
    _trainer(small_model, warmup_epochs=float(MAX_EPOCHS))
    for bad in (math.nextafter(MAX_EPOCHS, math.inf), 1e300, math.inf, math.nan, -1e-300):
        with pytest.raises(ValueError, match="warmup_epochs"):
            _trainer(small_model, warmup_epochs=bad)


def test_c_trainer_epoch_and_batch_edges(small_model):
    _trainer(small_model, epochs=MAX_EPOCHS)
    for kw, word in ((dict(epochs=MAX_EPOCHS + 1), "epochs"), (dict(epochs=2 ** 62), "epochs"),
                     (dict(batch_size=4097), "batch_size"),
                     (dict(batch_size=2, accumulation_steps=1025), "accumulation_steps")):
        with pytest.raises(ValueError, match=word):
            _trainer(small_model, **kw)
    t = _C.Trainer(small_model._native, 4096, 32, 32, batch_size=4096, accumulation_steps=1)
    assert t.state()["steps_per_epoch"] == 1
    with pytest.raises(ValueError, match="n_train"):
        _C.Trainer(small_model._native, 2 ** 40 + 1, 32, 32, batch_size=2)


@pytest.mark.parametrize("dim", [MAX_DECODER_DIM + 4, 2 ** 28, 2 ** 30])
def test_c_model_refuses_a_huge_decoder_dim(dim):
    with pytest.raises(ValueError, match="decoder_dim must be a multiple of 4 in 4..4096"):
        _C.CODModel("edgenext_tiny_test", dim, 2, 0, 0, 0.5, 0.01)
    with pytest.raises(ValueError, match="decoder_dim must be a multiple of 4 in 4..4096"):
        Model("edgenext_tiny_test", decoder_dim=dim, num_experts=2, img_size=32)


def test_model_config_edges():
    Model("edgenext_tiny_test", decoder_dim=4, num_experts=1, img_size=32, seed=2 ** 64 - 1)
    for kw, word in ((dict(decoder_dim=0), "decoder_dim"), (dict(num_experts=33), "num_experts"),
                     (dict(seed=2 ** 64), "seed"), (dict(img_size=4128), "img_size"),
                     (dict(seed=-1), "seed")):
        with pytest.raises(ValueError, match=word):
            Model("edgenext_tiny_test", **dict(dict(decoder_dim=4, num_experts=1, img_size=32), **kw))
    assert np.isfinite(Model("edgenext_tiny_test", decoder_dim=4, num_experts=1, img_size=32)
                       .num_parameters())


def test_c_model_forward_side_edge(small_model):
    import time
    t0 = time.perf_counter()
    ok = np.zeros((1, 3, 8192, 32), np.float32)
    assert small_model._native.forward(ok, False)[0].shape == (1, 1, 8192, 32)
    with pytest.raises(ValueError, match=r"1 images of 8224x32 exceeds the model's limits \(sides <= 8192"):
        small_model._native.forward(np.zeros((1, 3, 8224, 32), np.float32), False)
    assert time.perf_counter() - t0 < 30


def test_master_port_and_nprocs_edges():
    for ok in ("1", "65535"):
        assert any("--master-port is ignored without --use-ddp" in n
                   for n in _train_args("--master-port", ok)[2])
        assert not any("--master-port" in n for n in _train_args("--use-ddp", "--master-port", ok)[2])
    for bad in ("0", "65536"):
        with pytest.raises(cli.UsageError, match=f"^--master-port must be in 1..65535, got {bad}$"):
            _train_args("--use-ddp", "--master-port", bad)
    for ok in ("1", "64"):
        assert not any("--nprocs" in n for n in _train_args("--use-ddp", "--nprocs", ok)[2])
    for bad in ("0", "65"):
        with pytest.raises(cli.UsageError, match=f"^--nprocs must be in 1..64, got {bad}$"):
            _train_args("--use-ddp", "--nprocs", bad)
