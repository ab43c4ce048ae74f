"""A run directory of damaged or inconsistent files: every case is refused before training,
with one message naming the file and the field (codext/_rundir.py, cx_trainer_check_state).
Regression cases of issue 13's fuzzing: run metadata of the wrong JSON type or missing, a
position edited in both files, best.safetensors copied over last.safetensors, overflowing
positions."""
import json
import os
import shutil
import struct

import numpy as np
import pytest

import codext
from codext import _C, cli
from codext._rundir import RunDir, RunMetadataError, read_metadata
from codext.train import BEST, LAST, LAST_STATE, train

TINY = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
            batch_size=4, epochs=3, stage1_epochs=1, lr=1e-3, synthetic_train=8,
            synthetic_test=4, amp=False, seed=3)


class Stop(Exception):
    pass


def _stop_after_one(line):
    if line.startswith("epoch "):
        raise Stop


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A run of 3 epochs stopped after its first (2 steps per epoch)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = codext.Config(**TINY, checkpoint_dir=str(folder))
    with pytest.raises(Stop):
        train(cfg, log=_stop_after_one)
    return cfg


@pytest.fixture
def run(one_epoch_run, tmp_path):
    """A private copy of the stopped run: (Config pointing at it, folder)."""
    folder = tmp_path / "run"
    shutil.copytree(one_epoch_run.checkpoint_dir, folder)
    return one_epoch_run.replace(checkpoint_dir=str(folder)), str(folder)


def rewrite_header(path, change):
    """Rewrites a safetensors header: change(header dict) returns the new JSON value (any
    type); the data block stays, the header is re-padded to 8 bytes."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    text = json.dumps(change(header)).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def set_meta(path, **values):
    def change(h):
        for k, v in values.items():
            if v is None:
                h["__metadata__"].pop(k, None)
            else:
                h["__metadata__"][k] = v
        return h
    rewrite_header(path, change)


def state_file(folder):
    """The state file of the folder's checkpoint set (last.safetensors names it)."""
    return RunDir(folder).state_path


def resume(cfg):
    return train(cfg, resume=cfg.checkpoint_dir, progress=False)


def test_the_untouched_run_resumes(run):
    cfg, folder = run
    assert len(resume(cfg).history["epoch"]) == 3


@pytest.mark.parametrize("key, value, field, problem", [
    ("codext_config", "[]", "codext_config", "must be an object, got a list"),
    ("codext_config", "<the run's config with seed 1e400>", "codext_config", "Config.seed must be an int"),
    ("codext_config", "{}", "codext_config", "lacks the field(s) dataset_path, img_size"),
    ("codext_config", "not json", "codext_config", "not JSON"),
    ("codext_history", "{}", "codext_history.step_loss", "missing"),
    ("codext_history", "[]", "codext_history", "must be an object, got a list"),
    ("codext_best", "{}", "codext_best", "must have the keys epoch, value, metrics"),
    ("codext_best", "[1]", "codext_best", "must be an object"),
    ("codext_data", "[]", "codext_data", "must be an object, got a list"),
    ("codext_data", "{\"n_train\": -1, \"shape\": [32, 32], \"crc32\": 0}", "codext_data", "n_train"),
    ("codext_config", None, "codext_config", "missing"),
    ("codext_run_id", None, "codext_run_id", "missing"),
    ("codext_run_id", "xyz", "codext_run_id", "16 hex digits"),
    ("step", "9" * 30, "step", "must be an integer"),
    ("epoch", str(2 ** 62), "codext_history", "records 1 epochs and 2 steps, the run position is epoch 4611686018427387904"),
])
def test_state_metadata_of_the_wrong_type_names_file_and_field(run, key, value, field, problem):
    cfg, folder = run
    state = state_file(folder)
    if value == "<the run's config with seed 1e400>":
        value = json.dumps(dict(cfg.to_dict(), seed=1e400))
    set_meta(state, **{key: value})
    with pytest.raises(ValueError) as e:
        resume(cfg)
    assert str(e.value).startswith(f"{state}: {field}: ") and problem in str(e.value)


@pytest.mark.parametrize("change, field, problem", [
    (lambda h: [h], "header", "must be a JSON object, got a list"),
    (lambda h: dict(h, __metadata__="a string"), "__metadata__", "must be a JSON object, got a string"),
    (lambda h: dict(h, __metadata__=dict(h["__metadata__"], step=5)), "__metadata__.step", "must be a string"),
])
def test_a_header_of_the_wrong_shape_names_file_and_field(run, change, field, problem):
    cfg, folder = run
    for path in (state_file(folder), os.path.join(folder, LAST)):
        saved = open(path, "rb").read()
        rewrite_header(path, change)
        with pytest.raises(RunMetadataError, match=rf"^{path}: {field}: {problem}"):
            resume(cfg)
        open(path, "wb").write(saved)


def test_cli_resume_and_eval_report_damaged_metadata_in_one_line(run, capsys):
    cfg, folder = run
    state = state_file(folder)
    set_meta(state, codext_config="[]")
    assert cli.main(["train", "--resume", folder, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"codext: error: {state}: codext_config: must be an object, got a list"
    # eval reads the run's synthetic-set settings from the same state file
    set_meta(state, codext_config=json.dumps(dict(cfg.to_dict(), seed=1e400)))
    assert cli.main(["eval", "--checkpoint", folder]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"codext: error: {state}: codext_config: Config.seed must be an int")
    assert "\n" not in err


def test_eval_uses_the_run_settings_when_they_are_valid(run, capsys):
    cfg, folder = run
    assert cli.main(["eval", "--checkpoint", folder, "--batch-size", "4"]) == 0
    assert f"synthetic ({cfg.synthetic_test} images" in capsys.readouterr().out


def test_best_copied_over_last_is_refused(run):
    cfg, folder = run
    shutil.copyfile(os.path.join(folder, BEST), os.path.join(folder, LAST))
    with pytest.raises(ValueError, match=rf"{LAST} holds the best \(EMA\) weights.*copied over"):
        resume(cfg)


def test_weights_not_those_the_state_was_saved_with_are_refused(run):
    cfg, folder = run
    last = os.path.join(folder, LAST)
    with open(last, "r+b") as f:  # one flipped bit in the last tensor's data
        f.seek(-2, os.SEEK_END)
        byte = f.read(1)
        f.seek(-2, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x10]))
    # The per-tensor checksums would catch the flip as corruption first; without them the file
    # reads as a valid weights file, and only the run's digest tells it is not the saved one.
    set_meta(last, codext_crc32c=None)
    with pytest.raises(ValueError, match=r"weights in .*last\.safetensors \(digest [0-9a-f]{8}\) are not "
                                         r"those .*last\.state\.step2\.safetensors was saved with"):
        resume(cfg)
    # and a weights file whose recorded digest was edited
    set_meta(last, codext_weights_crc32="00000000")
    with pytest.raises(ValueError, match="weights digest 00000000"):
        resume(cfg)


def test_a_weights_file_of_another_epoch_is_refused(run):
    cfg, folder = run
    set_meta(os.path.join(folder, LAST), codext_train_step="4")
    with pytest.raises(ValueError, match=r"\(step 4\) and .* \(step 2\) belong to different epochs"):
        resume(cfg)


# ---- the C check of the run position (Trainer.load_state) -------------------------------------

def _trainer_for(cfg):
    model = codext.Model(cfg)
    return model, _C.Trainer(
        model._native, cfg.synthetic_train, cfg.img_size, cfg.img_size, batch_size=cfg.batch_size,
        epochs=cfg.epochs, stage1_epochs=cfg.stage1_epochs, lr=cfg.lr, seed=cfg.seed)


@pytest.mark.parametrize("edit, message", [
    # 2^62 epochs: epoch x steps_per_epoch overflowed (UB) and wrapped to a "done" run
    (dict(epoch=str(2 ** 62)), "run position (step 2, epoch 4611686018427387904"),
    (dict(epoch=str(2 ** 63 - 1), step="0"), "run position"),
    # the position edited consistently to "done": stage step and step counts betray it
    (dict(epoch="3", step="6", ema_updates="6"), "stage 1, stage step 2 recorded at step 6, but this run "
                                                 "is then in stage 2 at stage step 4"),
    (dict(epoch="3", step="6", ema_updates="6", stage="2", stage_step="4"),
     "backbone.stem.0.weight has 0 AdamW steps, but at step 6 (stage 2, stage step 4) it has 4"),
    (dict(epoch="0", step="0", epoch_step="0", ema_updates="0", stage="0", stage_step="0"),
     "has 2 AdamW steps, but at step 0 (stage 0, stage step 0) it has 0"),
    (dict(stage="2"), "stage 2, stage step 2 recorded at step 2, but this run is then in stage 1"),
    (dict(stage_step="1"), "stage step 1 recorded at step 2"),
    (dict(ema_updates="3"), "3 EMA updates recorded after 2 optimizer steps"),
    (dict(epoch_step="1"), "run position (step 2, epoch 1, epoch step 1)"),
])
def test_trainer_load_state_refuses_an_impossible_position(run, edit, message):
    cfg, folder = run
    state = state_file(folder)
    _, trainer = _trainer_for(cfg)
    before = trainer.state()
    set_meta(state, **edit)
    with pytest.raises(ValueError) as e:
        trainer.load_state(state)
    assert str(e.value).startswith(state) and message in str(e.value)
    assert trainer.state() == before  # nothing loaded


def test_param_step_counts_are_checked_per_parameter(run):
    cfg, folder = run
    state = state_file(folder)
    steps = json.loads(read_metadata(state)["param_steps"])
    first_head = next(i for i, s in enumerate(steps) if s)
    steps[first_head] = 1
    set_meta(state, param_steps=json.dumps(steps).replace(" ", ""))
    model, trainer = _trainer_for(cfg)
    name = model.parameter_names()[first_head]
    with pytest.raises(ValueError, match=rf"parameter {name} has 1 AdamW steps, but at step 2 "
                                         rf"\(stage 1, stage step 2\) it has 2"):
        trainer.load_state(state)


def test_sparse_experts_may_have_fewer_steps_never_more(tmp_path):
    cfg = codext.Config(**dict(TINY, moe_top_k=1), checkpoint_dir=str(tmp_path))
    with pytest.raises(Stop):
        train(cfg, log=_stop_after_one)
    state = state_file(tmp_path)
    model, trainer = _trainer_for(cfg)
    names = model.parameter_names()
    steps = json.loads(read_metadata(state)["param_steps"])
    expert = next(i for i, n in enumerate(names) if ".moe.experts." in n)
    trainer.load_state(state)  # as written
    steps[expert] = 3
    set_meta(state, param_steps=json.dumps(steps).replace(" ", ""))
    with pytest.raises(ValueError, match=rf"parameter {names[expert]} has 3 AdamW steps.*at most 2"):
        _trainer_for(cfg)[1].load_state(state)


def test_rundir_reads_a_folder_without_state_as_no_saved_config(tmp_path):
    assert RunDir(tmp_path).saved_config() is None
    assert RunDir.beside(tmp_path / "best.safetensors").folder == str(tmp_path)
    np.testing.assert_equal(cli.run_settings(str(tmp_path / "x.safetensors")), {})


def test_eval_refuses_a_run_config_asking_for_more_memory_than_there_is(run, monkeypatch, capsys):
    from codext import _shared
    cfg, folder = run
    set_meta(state_file(folder),
             codext_config=json.dumps(dict(cfg.to_dict(), synthetic_test=10_000_000)))
    monkeypatch.setattr(_shared, "available_memory", lambda: (2 ** 30, "MemAvailable"))
    assert cli.main(["eval", "--checkpoint", folder]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert err.startswith("python -m codext eval: error: --synthetic-test 10000000 (the run's "
                          "synthetic_test, saved beside ") and "of memory needed, only 1.0 GiB" in err


def test_an_epoch_whose_product_wraps_to_the_step_is_refused(run):
    # 4 steps per epoch: 2^62 x 4 + 0 wraps to 0 = step in int64, so the old check passed
    # (undefined behaviour; in practice the run looked done or fresh); the epoch is now
    # bounded before it is multiplied
    cfg, folder = run
    state = state_file(folder)
    set_meta(state, epoch=str(2 ** 62), step="0", ema_updates="0")
    model = codext.Model(cfg)
    trainer = _C.Trainer(model._native, 16, cfg.img_size, cfg.img_size, batch_size=cfg.batch_size,
                         epochs=cfg.epochs, stage1_epochs=cfg.stage1_epochs, lr=cfg.lr, seed=cfg.seed)
    assert trainer.state()["steps_per_epoch"] == 4
    with pytest.raises(ValueError, match=r"run position \(step 0, epoch 4611686018427387904, epoch "
                                         r"step 0\) does not fit this run \(4 steps per epoch, 3 epochs"):
        trainer.load_state(state)


@pytest.mark.parametrize("field, value, problem", [
    ("decoder_dim", 2 ** 31, "decoder_dim must be a multiple of 4 in 4..4096, got 2147483648"),
    ("decoder_dim", 2 ** 28, "decoder_dim must be a multiple of 4 in 4..4096, got 268435456"),
    ("seed", 1e400, "seed must be an integer, got inf"),
    ("num_experts", 33, "num_experts must be in 1..32, got 33"),
    ("img_size", 2 ** 40, "img_size must be a multiple of 32 in 32..4096"),
])
def test_a_checkpoint_model_config_out_of_range_names_file_and_field(run, field, value, problem, capsys):
    cfg, folder = run
    best = os.path.join(folder, BEST)

    def change(h):
        model_cfg = json.loads(h["__metadata__"]["codext_model"])
        model_cfg[field] = value
        h["__metadata__"]["codext_model"] = json.dumps(model_cfg)
        return h
    rewrite_header(best, change)
    with pytest.raises(ValueError, match=rf"^{best}: codext_model metadata: {problem}"):
        codext.load(best)
    assert cli.main(["eval", "--checkpoint", best]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"codext: error: {best}: codext_model metadata: ") and err.count("\n") == 1


def test_eval_with_both_flags_does_not_need_the_run_settings(run, capsys):
    cfg, folder = run
    set_meta(state_file(folder), codext_config="[]")
    assert cli.main(["eval", "--checkpoint", folder, "--seed", "1", "--synthetic-test", "2"]) == 0
    assert "synthetic (2 images" in capsys.readouterr().out


STATE_KEYS = ("format", "format_version", "step", "epoch", "epoch_step", "stage", "stage_step",
              "seed", "ema_updates", "loss_scale", "loss_scale_good_steps", "param_steps",
              "codext_config", "codext_history", "codext_best", "codext_data", "codext_run_id",
              "codext_last_crc32")
WEIGHTS_KEYS = ("codext_model", "codext_train_step", "codext_run_id", "codext_weights",
                "codext_weights_crc32", "codext_state_file", "codext_state_size")


@pytest.mark.parametrize("name, key", [(LAST_STATE, k) for k in STATE_KEYS] +
                         [(LAST, k) for k in WEIGHTS_KEYS])
def test_any_metadata_value_of_the_wrong_kind_is_one_line_naming_the_file(run, name, key, capsys):
    cfg, folder = run
    path = state_file(folder) if name == LAST_STATE else os.path.join(folder, name)
    original = open(path, "rb").read()
    for value in ("[]", "{}", "1e400", "-1", None):
        set_meta(path, **{key: value})
        assert cli.main(["train", "--resume", folder, "--quiet"]) == 1, (key, value)
        err = capsys.readouterr().err
        assert err.startswith(f"codext: error: {path}") and err.count("\n") == 1, (key, value, err)
        open(path, "wb").write(original)
