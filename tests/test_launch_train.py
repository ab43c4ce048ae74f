"""codext.launch() end to end: two CPU workers train the tiny model through the launcher
(store, shared-memory collectives, dataset by memfd) and end where one process with the
doubled batch ends; a fault injected at a training step names its rank."""
import os
import uuid

import numpy as np
import pytest

import codext
from codext import _C
from codext.launch import WorkerError
from opcheck import relative_error
from test_launch import marked, our_segments

TINY = dict(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32,
            epochs=2, stage1_epochs=1, lr=1e-3, synthetic_train=17, synthetic_test=4, seed=3,
            amp=False, num_threads=1)


def test_two_workers_train_like_one_process_with_the_doubled_batch(tmp_path, monkeypatch):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("CODEXT_TEST_MARK", mark)
    lines = []
    cfg = codext.Config(batch_size=2, checkpoint_dir=str(tmp_path / "ddp"), **TINY)
    result = codext.launch(cfg, nprocs=2, timeout=30, log=lines.append)
    assert result.history["step_loss"].shape == (8,)  # 17 // 4 = 4 steps per epoch
    assert result.history["val_sm"].shape == (2,) and np.isfinite(result.history["val_sm"]).all()
    assert any(l.split()[:2] == ["2/2", "2"] for l in lines), lines  # the epoch table's row
    assert not any(l.startswith("[rank 1]") for l in lines)
    assert marked(mark) == [] and our_segments() == []

    single = codext.train(cfg.replace(batch_size=4, checkpoint_dir=str(tmp_path / "one")),
                          progress=False)
    ddp_weights = codext.load(result.last_checkpoint)._params
    one_weights = codext.load(single.last_checkpoint)._params
    assert relative_error(ddp_weights, one_weights) < 1e-6
    np.testing.assert_allclose(result.history["step_loss"], single.history["step_loss"], rtol=1e-5)
    assert os.path.exists(result.best_checkpoint)


def test_a_fault_at_a_training_step_names_the_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXT_FAULT", "1:5:raise")
    cfg = codext.Config(batch_size=2, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(WorkerError) as info:
        codext.launch(cfg, nprocs=2, timeout=30, log=None)
    assert info.value.rank == 1 and "injected fault: rank 1 before step 5" in str(info.value)
    # the checkpoint of the finished first epoch (4 steps) is intact
    assert os.path.exists(tmp_path / "last.safetensors")
    codext.load(str(tmp_path / "last.safetensors"))


def test_config_timeout_bounds_a_hang(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXT_FAULT", "1:1:hang")
    monkeypatch.setenv("NCCL_TIMEOUT", "600")  # the Config field wins over the environment
    cfg = codext.Config(batch_size=2, checkpoint_dir=str(tmp_path), timeout=3.0, **TINY)
    with pytest.raises(WorkerError, match=r"timed out after 3.0 s .*rank 1 did not arrive \(stalled\)"):
        codext.launch(cfg, nprocs=2, log=None)
    with pytest.raises(ValueError, match="timeout"):
        codext.Config(timeout=0)


def test_launch_without_a_config_fits_the_demos_frozen_epochs_to_epochs_given(tmp_path, monkeypatch):
    # launch(None, epochs=1) is the demo with one epoch: its 4 frozen epochs must not make that
    # an error (the rule of codext.config.fitted_stage1_epochs, shared with the CLI)
    monkeypatch.setenv("CODEXT_TEST_MARK", uuid.uuid4().hex)
    small = dict(TINY, synthetic_train=8, synthetic_test=4, batch_size=4)
    small.pop("epochs"), small.pop("stage1_epochs")
    result = codext.launch(None, nprocs=1, timeout=60, log=None, epochs=1,
                           checkpoint_dir=str(tmp_path / "demo"), **small)
    assert (result.config.epochs, result.config.stage1_epochs) == (1, 0)
    assert result.config.img_size == TINY["img_size"] and result.config.lr == TINY["lr"]
    assert result.history["step_loss"].shape == (2,)
    # a config the user built keeps what they set: the contradiction is theirs to fix
    with pytest.raises(ValueError, match="stage1_epochs"):
        codext.launch(codext.Config.demo(), nprocs=1, epochs=2, checkpoint_dir=str(tmp_path / "x"))


def test_config_dataset_path_is_what_train_and_launch_train_on(tmp_path, monkeypatch):
    """Config.dataset_path with no data argument: the folder is loaded (not the synthetic
    set); a missing folder is an error naming the field before the checkpoint folder is
    made, for codext.train and codext.launch alike."""
    from test_data_load import make_cod10k
    monkeypatch.setenv("CODEXT_TEST_MARK", uuid.uuid4().hex)
    monkeypatch.setenv("CODEXT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "COD10K-v3"
    make_cod10k(root, n_cam=5, n_noncam=0)
    small = dict(TINY, batch_size=2, epochs=1, stage1_epochs=0)
    for run in (lambda cfg: codext.train(cfg, log=None),
                lambda cfg: codext.launch(cfg, nprocs=1, timeout=60, log=None)):
        missing = codext.Config(dataset_path=str(tmp_path / "nowhere"),
                                checkpoint_dir=str(tmp_path / "never"), **small)
        with pytest.raises(FileNotFoundError, match=r"Config.dataset_path .*nowhere.*: no such dataset folder"):
            run(missing)
        assert not (tmp_path / "never").exists()
    # a folder that is there but holds no dataset: refused before overwrite=True deletes
    # the old run in the checkpoint folder
    (tmp_path / "empty").mkdir()
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "last.safetensors").write_bytes(b"an old run")
    for run in (lambda cfg: codext.train(cfg, log=None, overwrite=True),
                lambda cfg: codext.launch(cfg, nprocs=1, timeout=60, log=None, overwrite=True)):
        with pytest.raises((ValueError, OSError)):
            run(codext.Config(dataset_path=str(tmp_path / "empty"), checkpoint_dir=str(old), **small))
        assert (old / "last.safetensors").read_bytes() == b"an old run"
    lines = []
    cfg = codext.Config(dataset_path=str(root), checkpoint_dir=str(tmp_path / "a"), **small)
    result = codext.train(cfg, log=lines.append)
    assert any(line.startswith("data: Dataset(") and "train=5" in line for line in lines), lines
    assert result.history["step_loss"].shape == (2,)   # 5 images, batch 2 (the last one dropped): not synthetic's 17
    result = codext.launch(cfg.replace(checkpoint_dir=str(tmp_path / "b")), nprocs=1,
                           timeout=60, log=None)
    assert result.history["step_loss"].shape == (2,)
