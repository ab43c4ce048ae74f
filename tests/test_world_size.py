"""Config.world_size (issue 9, "fewer devices than the config's world size: keep the global
batch by accumulation and say so"): a recipe written for W workers runs on another number of
workers with accumulation_steps scaled so that the global batch, and so the arithmetic, stay;
the run says so; a split that cannot be even is refused naming the fields (or flags)."""
import uuid

import numpy as np
import pytest

import codext
from codext import cli
from codext._rundir import RunDir
from codext.train import train
from opcheck import relative_error

TINY = dict(backbone="edgenext_tiny_test", decoder_dim=16, num_experts=3, img_size=32,
            epochs=2, stage1_epochs=1, lr=1e-3, synthetic_train=17, synthetic_test=4, seed=3,
            amp=False, num_threads=1, batch_size=2)


def test_a_recipe_for_two_workers_on_one_keeps_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXT_TEST_MARK", uuid.uuid4().hex)
    two = codext.launch(codext.Config(**TINY, checkpoint_dir=str(tmp_path / "two")), nprocs=2,
                        timeout=30, log=None)
    lines = []
    one = train(codext.Config(**TINY, world_size=2, checkpoint_dir=str(tmp_path / "one")),
                log=lines.append)
    assert ("note: 1 worker(s) for a recipe of Config.world_size 2: Config.accumulation_steps 1 "
            "-> 2 keeps the global batch at 4 images") in lines
    assert one.history["step_loss"].shape == two.history["step_loss"].shape == (8,)
    ours = codext.load(one.last_checkpoint)._params
    assert relative_error(ours, codext.load(two.last_checkpoint)._params) < 1e-6
    # the run records what it ran: fitting the saved config again changes nothing, so the
    # original recipe resumes it (and the saved one, as the CLI's --resume uses it)
    saved = codext.Config.from_dict(RunDir(str(tmp_path / "one")).state().config)
    assert (saved.world_size, saved.accumulation_steps) == (1, 2)
    assert saved.fit_to_world(1) == (saved, None)
    # without world_size, one worker of batch 2 is another recipe: the comparison can fail
    plain = train(codext.Config(**TINY, checkpoint_dir=str(tmp_path / "plain")), progress=False)
    assert relative_error(codext.load(plain.last_checkpoint)._params, ours) > 1e-4


def test_more_workers_than_the_recipe_lower_accumulation():
    cfg = codext.Config(batch_size=8, world_size=1, accumulation_steps=4)
    fitted, note = cfg.fit_to_world(2)
    assert (fitted.world_size, fitted.accumulation_steps, fitted.batch_size) == (2, 2, 8)
    assert "accumulation_steps 4 -> 2 keeps the global batch at 32 images" in note
    assert codext.Config(batch_size=8).fit_to_world(4) == (codext.Config(batch_size=8), None)


def test_an_uneven_split_is_refused_naming_the_fields_and_the_flags(tmp_path, capsys):
    message = (r"Config.world_size 3 x Config.accumulation_steps 1 = 3 micro-batches of "
               r"Config.batch_size 2 per step cannot be shared evenly by 2 worker\(s\)")
    with pytest.raises(ValueError, match=message):
        codext.Config(**TINY, world_size=3).fit_to_world(2)
    with pytest.raises(ValueError, match=r"= 3072 micro-batches .* would need accumulation_steps "
                                         r"3072 on 1 worker\(s\), above the limit 1024"):
        codext.Config(**TINY, world_size=3, accumulation_steps=1024).fit_to_world(1)
    folder = tmp_path / "x"
    assert cli.main(["train", "--backbone", "edgenext_tiny_test", "--img-size", "32",
                     "--decoder-dim", "8", "--world-size", "4", "--accumulation-steps", "300",
                     "--checkpoint-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m codext train: error: --world-size 4 x --accumulation-steps "
                          "300 = 1200 micro-batches of --batch-size 32 per step would need")
    assert not folder.exists()
