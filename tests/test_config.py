"""codext.Config: defaults of docs/training.md, validation naming the field, round trips."""
import dataclasses
import doctest
import json
import pathlib

import numpy as np
import pytest

import codext.config
from codext.config import Config


def test_defaults_follow_design_section_5():
    c = Config()
    expected = dict(batch_size=32, img_size=352, epochs=150, stage1_epochs=30, lr=2.5e-4, stage2_lr=None,
                    backbone_lr_mult=0.1, backbone="edgenext_base", num_experts=7, moe_top_k=0, decoder_dim=64,
                    accumulation_steps=1, scheduler="onecycle", min_lr=1e-6, weight_decay=1e-4,
                    ema_decay=0.999, grad_clip=0.5, deep_supervision=True, ds_weight=0.5, balance_weight=0.01,
                    drop_path_rate=0.0, pretrained=None, amp=True, gradient_checkpointing=False,
                    select_metric="smeasure", dataset_path=None, eval_every=1, betas=(0.9, 0.999), eps=1e-8)
    for name, value in expected.items():
        assert getattr(c, name) == value, name
    assert c.effective_stage2_lr == 2.5e-4
    assert Config(stage2_lr=1e-4).effective_stage2_lr == 1e-4
    assert c.selection == ("sm", True) and Config(select_metric="mae").selection == ("mae", False)
    # the seed's flag names are fields
    for flag in ("--dataset-path", "--batch-size", "--img-size", "--epochs", "--stage1-epochs", "--backbone",
                 "--num-experts", "--accumulation-steps", "--lr", "--stage2-lr", "--scheduler", "--ema-decay",
                 "--gradient-checkpointing", "--deep-supervision", "--checkpoint-dir", "--warmup-epochs",
                 "--min-lr", "--grad-clip", "--moe-top-k", "--decoder-dim", "--seed", "--pretrained"):
        assert flag[2:].replace("-", "_") in codext.config.FIELD_NAMES, flag


@pytest.mark.parametrize("changes, field", [
    (dict(img_size=100), "img_size"),
    (dict(img_size=0), "img_size"),
    (dict(stage1_epochs=200), "stage1_epochs"),
    (dict(stage1_epochs=-1), "stage1_epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=0), "epochs"),
    (dict(moe_top_k=8), "moe_top_k"),
    (dict(num_experts=3, moe_top_k=4), "moe_top_k"),
    (dict(num_experts=0), "num_experts"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(stage2_lr=-1.0), "stage2_lr"),
    (dict(scheduler="step"), "scheduler"),
    (dict(backbone="edgenext_bse"), "backbone"),
    (dict(decoder_dim=30), "decoder_dim"),
    (dict(decoder_dim=0), "decoder_dim"),
    (dict(accumulation_steps=0), "accumulation_steps"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(grad_clip=-0.5), "grad_clip"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(backbone_lr_mult=-0.1), "backbone_lr_mult"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(warmup_epochs=-1), "warmup_epochs"),
    (dict(min_lr=-1e-6), "min_lr"),
    (dict(scheduler="cosine", lr=1e-7), "min_lr"),
    (dict(betas=(0.9, 1.0)), "betas"),
    (dict(eps=0.0), "eps"),
    (dict(select_metric="accuracy"), "select_metric"),
    (dict(eval_every=0), "eval_every"),
    (dict(num_threads=0), "num_threads"),
    (dict(seed=-1), "seed"),
    (dict(checkpoint_dir=""), "checkpoint_dir"),
    (dict(ds_weight=-0.5), "ds_weight"),
    (dict(device="gpu"), "device"),
    (dict(device="cuda:-1"), "device"),
    (dict(device="cuda:x"), "device"),
])
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"Config\.{field}\b"):
        Config(**changes)


@pytest.mark.parametrize("changes, field", [
    (dict(batch_size="32"), "batch_size"),
    (dict(batch_size=32.0), "batch_size"),
    (dict(amp=1), "amp"),
    (dict(lr="1e-3"), "lr"),
    (dict(backbone=None), "backbone"),
    (dict(betas=(0.9,)), "betas"),
    (dict(deep_supervision="yes"), "deep_supervision"),
    (dict(device=None), "device"),
    (dict(device=0), "device"),
])
def test_wrong_types_name_the_field(changes, field):
    with pytest.raises(TypeError, match=rf"Config\.{field}\b"):
        Config(**changes)


DEVICE_RULE = "Config.device must be 'auto', 'cpu', 'cuda' or 'cuda:N' with N in 0..255"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:255"])
def test_device_accepts_auto_cpu_cuda_and_cuda_n(device):
    c = Config(device=device)
    assert c.device == device and Config.from_json(c.to_json()) == c
    assert codext.config.parse_device(device) == ("cuda:0" if device == "cuda" else device)


@pytest.mark.parametrize("device", ["gpu", "cuda:-1", "cuda:x", "cuda:", "cuda:01", "cuda:256",
                                    "cuda:\u00b2", "CUDA", "cpu:0", "", " cuda", "cuda:+1"])
def test_device_rejects_the_rest_naming_the_accepted_values(device):
    with pytest.raises(ValueError) as e:
        Config(device=device)
    assert str(e.value) == DEVICE_RULE + (" (a GPU is 'cuda')" if device == "gpu" else "") + \
        f", got {device!r}"


def test_device_defaults_auto_and_the_demo_keeps_the_cpu():
    assert Config().device == "auto"
    assert Config.demo().device == "cpu" and Config.demo(device="auto").device == "auto"


def test_a_saved_config_without_device_loads():
    """Runs saved before Config.device existed: their config has no "device" (ADDED_FIELDS)."""
    old = Config(epochs=4, stage1_epochs=1).to_dict()
    del old["device"]
    assert Config.from_dict(old) == Config(epochs=4, stage1_epochs=1)
    assert Config.from_dict(old).device == "auto"
    from codext._rundir import RunMetadataError, parse_config
    fields = parse_config({"codext_config": json.dumps(old)}, "state.safetensors")
    assert "device" not in fields and Config.from_dict(fields).device == "auto"
    del old["seed"]  # a field that every saved run has is still required
    with pytest.raises(RunMetadataError, match="lacks the field.s. seed"):
        parse_config({"codext_config": json.dumps(old)}, "state.safetensors")


def test_unknown_fields_fail_with_a_suggestion():
    with pytest.raises(TypeError, match=r"no field 'epoch'.*did you mean 'epochs'"):
        Config(epoch=3)
    with pytest.raises(TypeError, match=r"no field 'stage1-epochs'.*'stage1_epochs'"):
        Config(**{"stage1-epochs": 3})
    with pytest.raises(TypeError, match="no field 'bogus'"):
        Config.from_dict({"bogus": 1})
    with pytest.raises(TypeError, match="keyword"):
        Config(32)
    with pytest.raises(ValueError, match="Config.img_size"):
        Config().replace(img_size=33)


def test_coercion():
    c = Config(lr=1, batch_size=np.int64(8), ema_decay=np.float32(0.5), betas=[0.8, 0.99],
               checkpoint_dir=pathlib.Path("ck") / "run", grad_clip=None)
    assert type(c.lr) is float and c.lr == 1.0
    assert type(c.batch_size) is int and c.batch_size == 8
    assert type(c.ema_decay) is float
    assert c.betas == (0.8, 0.99) and isinstance(c.betas, tuple)
    assert c.checkpoint_dir == "ck/run" and c.grad_clip is None


def test_dict_and_json_round_trip():
    c = Config(backbone="edgenext_small", num_experts=9, moe_top_k=2, scheduler="cosine", warmup_epochs=2.5,
               stage2_lr=1e-4, dataset_path="/data/COD10K-v3", pretrained="edgenext_small.usi_in1k", seed=2 ** 63)
    d = c.to_dict()
    assert set(d) == set(codext.config.FIELD_NAMES)
    assert Config.from_dict(d) == c
    text = c.to_json()
    assert json.loads(text)["betas"] == [0.9, 0.999]
    back = Config.from_json(text)
    assert back == c and back.to_json() == text
    assert Config.from_json(Config().to_json()) == Config()


def test_demo_config():
    d = Config.demo()
    assert d.backbone == "edgenext_xx_small" and d.img_size == 32 and d.synthetic_train == 4096
    assert 0 < d.stage1_epochs < d.epochs and not d.amp
    assert Config.demo(epochs=2, stage1_epochs=1).epochs == 2
    # a shorter demo keeps a stage-2 epoch unless stage1_epochs is given: a default that leaves
    # none becomes half the run (codext.config.fitted_stage1_epochs, shared with the CLI)
    assert [Config.demo(epochs=e).stage1_epochs for e in (1, 2, 3, 4, 5, 30)] == [0, 1, 1, 2, 4, 4]
    assert Config.demo().with_epochs_fitted(epochs=3).stage1_epochs == 1
    assert Config.demo().with_epochs_fitted(epochs=3, stage1_epochs=2).stage1_epochs == 2
    assert Config.demo().with_epochs_fitted(lr=1e-3) == Config.demo(lr=1e-3)
    with pytest.raises(ValueError, match="stage1_epochs"):
        Config.demo(epochs=1, stage1_epochs=2)


def test_stage_and_warmup_steps():
    c = Config(epochs=10, stage1_epochs=3, warmup_epochs=1.5, scheduler="cosine")
    assert c.stage_steps(7) == (21, 49)
    assert c.warmup_steps(7) == 10
    assert Config(epochs=4, stage1_epochs=0).stage_steps(5) == (0, 20)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        c.stage_steps(0)


def test_is_a_dataclass_and_docstring_examples_run():
    assert dataclasses.is_dataclass(Config)
    assert "img_size" in str(__import__("inspect").signature(Config))
    result = doctest.testmod(codext.config)
    assert result.failed == 0 and result.attempted >= 4
