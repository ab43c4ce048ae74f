"""Live progress (codext/_progress.py) and how train() feeds it from the C step loop."""
import io
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import codext
from codext import _progress
from codext._progress import Progress
from codext.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def drive(live, clock, steps_per_epoch, epochs, seconds_per_step=0.25):
    """Runs a fake trainer through `live` as train() does; returns the chunk sizes."""
    chunks, step = [], 0
    live.begin(0)
    for epoch in range(epochs):
        epoch_step = 0
        while epoch_step < steps_per_epoch:
            n = min(live.chunk(), steps_per_epoch - epoch_step)
            chunks.append(n)
            clock.now += n * seconds_per_step
            step, epoch_step = step + n, epoch_step + n
            live.steps(step, epoch, epoch_step, loss=1.0 / step, lr=1e-3)
        live.message(f"epoch {epoch + 1} done")
    live.close()
    return chunks


def test_plain_lines_every_log_every_steps_when_not_a_terminal():
    clock, lines, out = Clock(), [], io.StringIO()
    live = Progress(40, 20, 2, 8, log=lines.append, log_every=5, stream=out, clock=clock)
    assert live.mode == "lines"
    chunks = drive(live, clock, 20, 2)
    assert max(chunks) <= 5 and sum(chunks) == 40        # never past a report point
    status = [l for l in lines if l.startswith("epoch ") and " step " in l]
    assert [l.split(" (run ")[1].split(")")[0] for l in status] == \
        ["5/40", "10/40", "15/40", "25/40", "30/40", "35/40"]  # epoch ends: the summary line
    first = status[0]
    assert first.startswith("epoch 1/2 step 5/20") and "loss 0.2000" in first
    assert "lr 1.000e-03" in first and "32.0 img/s" in first            # 8 images / 0.25 s
    assert "ETA epoch 0:04 run 0:09" in first                           # 15 and 35 steps left
    assert any(l.startswith("estimate: about 9 s for the 37 steps left") for l in lines)
    assert out.getvalue() == ""                                         # everything through log


def test_run_eta_counts_the_evaluations_left():
    clock = Clock()
    live = Progress(40, 10, 4, 1, log=None, log_every=10, stream=io.StringIO(), clock=clock)
    live.begin(0)
    clock.now += 10.0
    live.steps(10, 0, 10, 1.0, 1e-3)
    assert live.eta(10) == (0.0, 30.0)
    live.evaluated(2.0)
    assert live.eta(10) == (0.0, 36.0)                   # three epochs left, 2 s each


def test_an_updating_line_on_a_terminal_without_tqdm(monkeypatch):
    monkeypatch.setattr(_progress, "_tqdm_class", lambda: None)
    monkeypatch.setenv("COLUMNS", "200")
    clock, lines, term = Clock(), [], Terminal()
    live = Progress(40, 20, 2, 8, log=lines.append, log_every=5, stream=term, clock=clock)
    assert live.mode == "line"
    chunks = drive(live, clock, 20, 2, seconds_per_step=0.1)
    assert chunks[:3] == [1, 2, 5]     # 1 to time a step, 2 more to the estimate, then REFRESH_S
    text = term.getvalue()
    assert text.count("\r") > 5 and "\n" not in text      # rewritten in place
    assert "epoch 2/2 step 20/20 (run 40/40)" in text and "ETA epoch" in text
    assert text.endswith("\r")                            # cleared before the last message
    assert lines[-1] == "epoch 2 done" and not any(" step " in l for l in lines)
    monkeypatch.setenv("COLUMNS", "40")                   # never wider than the terminal
    narrow = Terminal()
    drive(Progress(40, 20, 2, 8, log=None, stream=narrow, clock=clock), clock, 20, 2)
    assert max(len(part) for part in narrow.getvalue().split("\r")) == 39


def test_tqdm_on_a_terminal_when_importable(monkeypatch):
    made = []

    class FakeTqdm:
        def __init__(self, total, initial, file, desc, **kw):
            self.total, self.n, self.desc, self.postfix, self.closed = total, initial, desc, "", False
            made.append(self)

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

        def clear(self):
            self.cleared = getattr(self, "cleared", 0) + 1

        def refresh(self):
            pass

    monkeypatch.setattr(_progress, "_tqdm_class", lambda: FakeTqdm)
    clock, lines = Clock(), []
    live = Progress(40, 20, 2, 8, log=lines.append, stream=Terminal(), clock=clock)
    assert live.mode == "tqdm"
    drive(live, clock, 20, 2)
    assert [b.desc for b in made] == ["epoch 1/2", "epoch 2/2"]
    assert all(b.n == b.total == 20 and b.closed for b in made)
    assert made[0].cleared == 1 and lines[0].startswith("estimate:")   # printed above the bar
    assert "loss 0.0250" in made[1].postfix and "img/s" in made[1].postfix and "run ETA 0:00" in made[1].postfix


def tiny(**kw):
    kw = dict(dict(backbone="edgenext_tiny_test", img_size=32, decoder_dim=8, num_experts=2,
                   batch_size=4, epochs=2, stage1_epochs=1, synthetic_train=24,
                   synthetic_test=4, seed=5), **kw)
    return codext.Config(checkpoint_dir=tempfile.mkdtemp(), **kw)


def test_steps_in_chunks_give_the_weights_of_whole_epochs():
    """Reporting after every step (chunks of 1) changes nothing the run computes."""
    quiet = train(tiny(), progress=False)
    lines = []
    live = Progress(12, 6, 2, 4, log=lines.append, log_every=1, stream=io.StringIO())
    chunked = train(tiny(), progress=live)
    assert sum(" step " in l for l in lines) == 10       # steps 1..5 of both epochs
    a, b = codext.load(quiet.last_checkpoint), codext.load(chunked.last_checkpoint)
    assert np.array_equal(a._params, b._params)
    assert np.array_equal(quiet.history["step_loss"], chunked.history["step_loss"])


def test_log_every_sets_the_progress_lines_of_the_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CODEXT_NUM_THREADS="2")
    argv = ["--backbone", "edgenext_tiny_test", "--img-size", "32", "--batch-size", "4",
            "--epochs", "2", "--stage1-epochs", "1", "--decoder-dim", "8", "--num-experts", "2",
            "--synthetic-train", "40", "--synthetic-test", "4", "--checkpoint-dir",
            str(tmp_path / "ck")]
    runs = {}
    for every in ("3", "4"):
        r = subprocess.run([sys.executable, "-m", "codext", "train", *argv, "--log-every", every,
                            "--checkpoint-dir", str(tmp_path / every)], capture_output=True,
                           text=True, cwd=str(tmp_path), env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        runs[every] = [l for l in r.stdout.splitlines() if " step " in l and "(run " in l]
    # 10 steps per epoch, 20 in all: a line at each multiple but the epochs' last steps
    assert [l.split("(run ")[1].split(")")[0] for l in runs["3"]] == \
        [f"{s}/20" for s in (3, 6, 9, 12, 15, 18)]
    assert [l.split("(run ")[1].split(")")[0] for l in runs["4"]] == \
        [f"{s}/20" for s in (4, 8, 12, 16)]
    first = runs["3"][0]
    assert "loss " in first and "lr " in first and "img/s" in first and "ETA epoch" in first


def test_the_start_says_what_the_run_will_do():
    cfg = tiny(log_every=100)
    lines = []
    train(cfg, progress=True, log=lines.append)
    start = lines[0]
    params = codext.Model(cfg).num_parameters()
    assert start.startswith("codext.train: COD model (edgenext_tiny_test")
    assert f"{params:,} parameters" in start
    assert "24 training images of 32x32 (the built-in synthetic set)" in start
    assert "12 optimizer steps of 4 images: 2 epochs of 6 (6 in stage 1, 6 in stage 2)" in start
    assert start.endswith(f"checkpoints in {os.path.abspath(cfg.checkpoint_dir)}")
    assert lines[1].startswith("estimate: about ") and "for the 9 steps left" in lines[1]
    assert lines[2].startswith("epoch 1/2 stage 1") and lines[3].startswith("epoch 2/2 stage 2")
    assert len(lines) == 4                                   # log_every 100: no step lines
    quiet = []
    train(tiny(), progress=False, log=quiet.append)
    assert quiet == []


def test_a_failed_step_clears_the_live_line_before_the_error(monkeypatch):
    monkeypatch.setattr(_progress, "_tqdm_class", lambda: None)
    term = Terminal()
    live = Progress(12, 6, 2, 4, log=None, stream=term)
    with pytest.raises(RuntimeError, match="not finite"):
        train(tiny(lr=1e30, stage1_epochs=0, grad_clip=0.0), progress=live)
    text = term.getvalue()
    assert "epoch 1/2 step 1/6" in text and text.endswith("\r") and "\n" not in text
