"""Resume in place, never overwrite by surprise (issue 11): a resumed run writes into the
folder it resumes, wherever the run recorded it was; a new run refuses a folder holding a
run unless asked to overwrite it; a finished run says so and is not silently extended; a
folder of the layout before checkpoint sets still resumes; a folder without a complete set
says how to recover; codext.launch() resumes with the same writer."""
import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

import codext
from codext import _C, _checkpoint, cli
from codext._rundir import BEST, HISTORY, LAST, LAST_STATE, RunDir, RunMetadataError
from codext.launch import WorkerError
from codext.train import train

TINY = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
            batch_size=4, epochs=3, stage1_epochs=1, lr=1e-3, synthetic_train=8,
            synthetic_test=4, amp=False, seed=3, num_threads=1)
TINY_FLAGS = ["--backbone", "edgenext_tiny_test", "--decoder-dim", "8", "--num-experts", "2",
              "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--stage1-epochs", "1",
              "--synthetic-train", "8", "--synthetic-test", "4", "--num-threads", "1", "--quiet"]


class Stop(Exception):
    pass


def stop_at(prefix):
    def log(line):
        if line.startswith(prefix):
            raise Stop(line)
    return log


def snapshot(folder):
    """{name: bytes} of every file in folder."""
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def bits_differ(path_a, path_b):
    a, _, _ = _C.safetensors_load(path_a)
    b, _, _ = _C.safetensors_load(path_b)
    return [n for n in a if not np.array_equal(a[n].view(np.uint8), b[n].view(np.uint8))]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run of 3 epochs stopped after its first (2 steps per epoch): its folder."""
    folder = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(Stop):
        train(codext.Config(**TINY, checkpoint_dir=str(folder)), log=stop_at("epoch 1/"))
    return str(folder)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The same run, uninterrupted: its folder."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    train(codext.Config(**TINY, checkpoint_dir=str(folder)), progress=False)
    return str(folder)


def copy_of(folder, tmp_path, name="copy"):
    shutil.copytree(folder, tmp_path / name)
    return str(tmp_path / name)


# ---- resume writes into the folder it resumes -------------------------------------------------

def test_a_copied_run_resumes_in_the_copy_and_leaves_the_original_alone(stopped, finished, tmp_path):
    original = copy_of(stopped, tmp_path, "original")
    moved = copy_of(original, tmp_path, "moved")
    before = snapshot(original)
    lines = []
    # the config still names the original folder (as the saved run does): resume wins
    result = train(codext.Config(**TINY, checkpoint_dir=original), resume=moved, log=lines.append)
    assert snapshot(original) == before
    assert (f"resuming from epoch 1, step 2, in {moved} (checkpoint set {LAST} + "
            f"last.state.step2.safetensors); writing there; training on the CPU") in lines
    assert result.last_checkpoint == os.path.join(moved, LAST) and result.config.checkpoint_dir == moved
    assert RunDir(moved).state().config["checkpoint_dir"] == moved  # the run records where it is
    for name in (LAST, BEST):
        assert bits_differ(os.path.join(finished, name), os.path.join(moved, name)) == [], name


def test_a_relative_recorded_path_does_not_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(Stop):
        train(codext.Config(**TINY, checkpoint_dir="rel/ck"), log=stop_at("epoch 1/"))
    assert RunDir("rel/ck").state().config["checkpoint_dir"] == "rel/ck"
    moved = copy_of(tmp_path / "a" / "rel" / "ck", tmp_path, "moved")
    before = snapshot(tmp_path / "a" / "rel" / "ck")
    monkeypatch.chdir(tmp_path / "b")
    assert cli.main(["train", "--resume", moved, "--quiet"]) == 0
    assert os.listdir(tmp_path / "b") == []                       # nothing under today's cwd
    assert snapshot(tmp_path / "a" / "rel" / "ck") == before      # nor in the original
    assert len(RunDir(moved).state().history["epoch"]) == 3


def test_cli_resume_refuses_another_checkpoint_dir_and_overwrite(stopped, tmp_path, capsys):
    run = copy_of(stopped, tmp_path)
    assert cli.main(["train", "--resume", run, "--checkpoint-dir", str(tmp_path / "else")]) == 2
    err = capsys.readouterr().err
    assert f"--resume {run} continues the run in {run} and writes there, but --checkpoint-dir is" in err
    assert cli.main(["train", "--resume", run, "--overwrite"]) == 2
    assert "--resume and --overwrite exclude each other" in capsys.readouterr().err
    assert cli.main(["train", "--resume", run, "--checkpoint-dir", run, "--quiet"]) == 0  # the same: fine


# ---- a new run never replaces a run by surprise ----------------------------------------------

def test_a_new_run_refuses_a_folder_that_holds_a_run(stopped, tmp_path):
    run = copy_of(stopped, tmp_path)
    before = snapshot(run)
    cfg = codext.Config(**TINY, checkpoint_dir=run)
    with pytest.raises(FileExistsError, match=rf"{run} already holds a run stopped after epoch 1 of 3, "
                                              rf"step 2; a new run would replace its files\. Continue it "
                                              rf"with train\(config, resume=.*\), start over in it with "
                                              rf"overwrite=True"):
        train(cfg, progress=False)
    assert snapshot(run) == before


def test_overwrite_removes_the_old_runs_files_and_only_those(stopped, tmp_path):
    run = copy_of(stopped, tmp_path)
    with open(os.path.join(run, "notes.txt"), "w") as f:
        f.write("mine")
    seen = []

    def log(line):  # stops the new run when it says it removed the old one, before training
        if line.startswith("overwrite:"):
            seen.append((line, sorted(os.listdir(run))))
            raise Stop
    with pytest.raises(Stop):
        train(codext.Config(**TINY, checkpoint_dir=run), overwrite=True, log=log)
    assert seen == [(f"overwrite: removed the files of a run stopped after epoch 1 of 3, step 2 in "
                     f"{run}", ["notes.txt"])]
    with pytest.raises(ValueError, match="resume and overwrite=True exclude each other"):
        train(codext.Config(**TINY), resume=stopped, overwrite=True)


def test_the_demo_run_twice_explains_how_to_go_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo_dir = codext.Config.demo().checkpoint_dir
    assert cli.main(["train", *TINY_FLAGS]) == 0                 # `python -m codext`: the demo
    capsys.readouterr()
    before = snapshot(demo_dir)
    assert cli.main(["train", *TINY_FLAGS]) == 2                 # the same again
    err = capsys.readouterr().err
    assert err.startswith(f"python -m codext train: error: {demo_dir} (the default --checkpoint-dir) "
                          f"already holds a finished run: 1 of 1 epochs, step 2. Continue it: python -m "
                          f"codext train --resume {demo_dir}; evaluate it: python -m codext eval "
                          f"--checkpoint {demo_dir}; or start a new run there with --overwrite")
    assert snapshot(demo_dir) == before
    assert cli.main(["train", *TINY_FLAGS, "--overwrite"]) == 0
    assert cli.main(["train", "--resume", demo_dir]) == 0        # finished: says so, exit 0
    assert "the run is finished: all 1 epochs done (step 2), nothing to train" in capsys.readouterr().out


# ---- a finished run -----------------------------------------------------------------------------

def test_a_finished_run_says_so_and_is_not_extended(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    lines = []
    result = train(codext.Config(**TINY), resume=run, log=lines.append)
    assert (f"the run is finished: all 3 epochs done (step 6), nothing to train; its results in "
            f"{run} (checkpoint set {LAST} + last.state.step6.safetensors)") in lines
    assert not any(line.startswith("epoch ") for line in lines)
    assert len(result.history["epoch"]) == 3 and snapshot(run) == before
    with pytest.raises(ValueError, match=r"the run is finished \(3 of 3 epochs\) and a finished run is not "
                                         r"extended .* To train 5 epochs, start a new run: in another "
                                         r"checkpoint_dir, or in this one with overwrite=True"):
        train(codext.Config(**dict(TINY, epochs=5)), resume=run, progress=False)
    assert cli.main(["train", "--resume", run, "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert "a finished run is not extended" in err and f"--checkpoint-dir {run} --overwrite" in err
    assert snapshot(run) == before


# ---- old layout, no complete set, the injection switch ----------------------------------------------

def set_meta(path, **values):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    for k, v in values.items():
        header["__metadata__"].pop(k) if v is None else header["__metadata__"].__setitem__(k, v)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def test_a_run_of_the_layout_before_checkpoint_sets_still_resumes(stopped, finished, tmp_path):
    run = copy_of(stopped, tmp_path)
    os.replace(os.path.join(run, "last.state.step2.safetensors"), os.path.join(run, LAST_STATE))
    set_meta(os.path.join(run, LAST), codext_state_file=None, codext_state_size=None)
    assert RunDir(run).state_path == os.path.join(run, LAST_STATE)
    train(codext.Config(**TINY), resume=run, progress=False)
    assert sorted(os.listdir(run)) == sorted([LAST, "last.state.step6.safetensors", BEST, HISTORY])
    assert bits_differ(os.path.join(finished, LAST), os.path.join(run, LAST)) == []


def test_a_torn_set_of_the_old_layout_names_the_way_out(stopped, tmp_path):
    run = copy_of(stopped, tmp_path)
    os.replace(os.path.join(run, "last.state.step2.safetensors"), os.path.join(run, LAST_STATE))
    set_meta(os.path.join(run, LAST), codext_state_file=None, codext_state_size=None,
             codext_train_step="4")  # the weights of a later epoch than the state: the old bug
    with pytest.raises(ValueError, match=r"belong to different epochs \(a checkpoint of the layout "
                                         r"before issue 11, interrupted while it was written\)\. To "
                                         r"recover: best\.safetensors.*overwrite=True"):
        train(codext.Config(**TINY), resume=run, progress=False)


def test_a_folder_without_a_complete_set_says_how_to_recover(stopped, tmp_path, capsys):
    run = copy_of(stopped, tmp_path)
    os.remove(os.path.join(run, LAST))  # as a kill inside the first save leaves it
    with pytest.raises(FileNotFoundError, match=rf"cannot resume from {run}: no complete checkpoint "
                                                rf"\(.*last\.safetensors does not exist: the run was "
                                                rf"stopped before its first checkpoint was complete\)\. "
                                                rf"To recover: best\.safetensors, where present, still "
                                                rf"holds usable weights"):
        train(codext.Config(**TINY), resume=run, progress=False)
    assert cli.main(["train", "--resume", run]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no complete checkpoint" in err and "--overwrite" in err
    # a new run in it is refused too: it holds run files
    with pytest.raises(FileExistsError, match="a run without a complete checkpoint"):
        train(codext.Config(**TINY, checkpoint_dir=run), progress=False)


@pytest.mark.parametrize("text", ["bogus", "state:0", "state:x", "weights:1:2"])
def test_a_bad_kill_switch_is_refused_naming_the_variable(text):
    with pytest.raises(ValueError, match=rf"CODEXT_KILL_IN_SAVE={text!r} must be POINT or POINT:N"):
        _checkpoint.kill_plan(text)
    assert _checkpoint.kill_plan("history:3") == ("history", 3) and _checkpoint.kill_plan("") is None


def test_a_bad_kill_switch_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEXT_KILL_IN_SAVE", "later")
    with pytest.raises(ValueError, match="CODEXT_KILL_IN_SAVE='later'"):
        train(codext.Config(**TINY, checkpoint_dir=str(tmp_path)), log=stop_at("epoch "))


# ---- codext.launch(): rank 0 writes with the same writer ----------------------------------------------

def test_a_launched_run_killed_inside_its_save_resumes_to_the_same_bits(tmp_path, monkeypatch):
    cfg = codext.Config(**dict(TINY, epochs=2, batch_size=2), checkpoint_dir=str(tmp_path / "whole"))
    whole = codext.launch(cfg, nprocs=2, timeout=30, log=None)
    run = str(tmp_path / "killed")
    monkeypatch.setenv("CODEXT_KILL_IN_SAVE", "state:2")  # rank 0, inside its second save
    with pytest.raises(WorkerError) as info:
        codext.launch(cfg.replace(checkpoint_dir=run), nprocs=2, timeout=30, log=None)
    assert info.value.rank == 0 and info.value.signal == "SIGKILL"
    assert "last.state.step4.safetensors" in os.listdir(run)       # written, but not yet named
    assert RunDir(run).state().step == 2
    monkeypatch.delenv("CODEXT_KILL_IN_SAVE")
    lines = []
    resumed = codext.launch(cfg, resume=run, nprocs=2, timeout=30, log=lines.append)
    assert any(f"resuming from epoch 1, step 2, in {run}" in ln for ln in lines), lines
    assert resumed.last_checkpoint == os.path.join(run, LAST)
    assert sorted(os.listdir(run)) == sorted([LAST, "last.state.step4.safetensors", BEST, HISTORY])
    assert bits_differ(whole.last_checkpoint, resumed.last_checkpoint) == []
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        codext.launch(cfg.replace(checkpoint_dir=run), nprocs=2, log=None)


@pytest.mark.parametrize("entry", ["train", "launch"])
def test_a_read_only_run_folder_says_to_resume_a_copy(stopped, tmp_path, entry):
    run = copy_of(stopped, tmp_path)
    # the folder's write probe fails (a folder in its place: unwritable even for root)
    os.mkdir(os.path.join(run, f".codext-write-test-{os.getpid()}"))
    with pytest.raises(OSError, match=rf"cannot resume the run in {run}: the folder is not "
                                      rf"writable .*copy the folder somewhere writable and "
                                      rf"resume the copy"):
        if entry == "train":
            train(codext.Config(**TINY), resume=run, progress=False)
        else:  # refused before any worker starts
            codext.launch(codext.Config(**TINY), resume=run, nprocs=1, log=None)


def test_cli_resumes_a_run_through_the_launcher(stopped, finished, tmp_path, capsys):
    run = copy_of(stopped, tmp_path)
    assert cli.main(["train", "--resume", run, "--use-ddp", "--nprocs", "1"]) == 0
    out = capsys.readouterr().out
    # rank 0's line, shown by the launcher as its own (no "[rank 0] " prefix)
    assert re.search(rf"^resuming from epoch 1, step 2, in {re.escape(run)}", out, re.M), out
    assert bits_differ(os.path.join(finished, LAST), os.path.join(run, LAST)) == []


def test_resuming_finishes_what_a_kill_after_the_last_set_left_undone(finished, tmp_path):
    """Killed after last.safetensors of the final save (CODEXT_KILL_IN_SAVE=weights): the run
    is finished, but history.json is an epoch behind and the previous state is still there."""
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    with open(os.path.join(run, HISTORY)) as f:
        history = json.load(f)
    with open(os.path.join(run, HISTORY), "w") as f:
        json.dump({k: v[:-1] for k, v in history.items()}, f)
    shutil.copyfile(os.path.join(run, "last.state.step6.safetensors"),
                    os.path.join(run, "last.state.step4.safetensors"))
    for name in ("last.safetensors.tmp.123", "history.json.tmp-9", "best.safetensors.tmp.77"):
        with open(os.path.join(run, name), "wb") as f:
            f.write(b"half")
    with open(os.path.join(run, "notes.tmp.5"), "w") as f:  # not a run file: stays
        f.write("mine")
    lines = []
    train(codext.Config(**TINY), resume=run, log=lines.append)
    assert any(line.startswith("the run is finished: all 3 epochs done (step 6)") for line in lines)
    assert snapshot(run) == dict(before, **{"notes.tmp.5": b"mine"})


def test_a_run_resumes_only_with_the_number_of_workers_it_started_with(stopped, tmp_path,
                                                                       monkeypatch, capsys):
    cfg = codext.Config(**dict(TINY, epochs=2, batch_size=2), checkpoint_dir=str(tmp_path / "run"))
    monkeypatch.setenv("CODEXT_KILL_IN_SAVE", "state:2")
    with pytest.raises(WorkerError):
        codext.launch(cfg, nprocs=2, timeout=30, log=None)
    monkeypatch.delenv("CODEXT_KILL_IN_SAVE")
    run = cfg.checkpoint_dir
    assert RunDir(run).state().world_size == 2
    before = snapshot(run)
    message = (rf"cannot resume from {run}: the run was trained by 2 workers and would continue "
               rf"with 1 worker; resume it with nprocs=2 ")
    with pytest.raises(ValueError, match=message):       # refused before any worker starts
        codext.launch(cfg, resume=run, nprocs=1, timeout=30, log=None)
    with pytest.raises(ValueError, match=message):       # and by a single process
        train(cfg, resume=run, progress=False)
    assert cli.main(["train", "--resume", run]) == 1
    err = capsys.readouterr().err
    assert "resume it with --nprocs 2 " in err and err.count("\n") == 1
    assert snapshot(run) == before
    # a single-process run records 1 worker: two may not continue it
    single = copy_of(stopped, tmp_path)
    assert RunDir(single).state().world_size == 1
    with pytest.raises(ValueError, match="trained by 1 worker and would continue with 2 workers"):
        codext.launch(codext.Config(**TINY), resume=single, nprocs=2, timeout=30, log=None)
    # a state written before the world size was kept has no key: the old checks apply
    state = RunDir(single).state_path
    set_meta(state, codext_world_size=None)
    assert RunDir(single).state().world_size is None
    set_meta(state, codext_world_size="0")
    with pytest.raises(RunMetadataError, match="codext_world_size"):
        RunDir(single).state()
